"""memocmt-serve with the shipped models: several clients streaming real RAVDESS speech at once,
and `memocmt-live --server` printing the same JSONL as a local session."""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from memocmt.audio import SAMPLE_RATE  # noqa: E402
from memocmt.live import cli as live_cli  # noqa: E402
from memocmt.live.asr import STICKY_LANGUAGE_PROBABILITY  # noqa: E402
from memocmt.serve.app import create_app  # noqa: E402
from memocmt.serve.session import ServerConfig  # noqa: E402
from tests.serve_helpers import ServerThread, load_real_engine, ravdess_stream, stream  # noqa: E402

WORDS = ("kids", "dogs", "talking", "sitting", "door")


@pytest.fixture(scope="module")
def engine():
    engine = load_real_engine()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine):
    with ServerThread(create_app(engine, ServerConfig(max_sessions=4))) as running:
        yield running


def test_several_clients_stream_real_speech_at_once(server, ravdess_dir):
    plans = {1: ["angry", "neutral"], 2: ["happy", "sad"], 3: ["neutral", "angry"]}
    results: dict[int, list[dict]] = {}

    def run(actor):
        results[actor] = stream(server.ws, ravdess_stream(ravdess_dir, actor, plans[actor]), speed=2.0)

    threads = [threading.Thread(target=run, args=(actor,)) for actor in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    labels = set(results[1][0]["labels"])
    for actor, messages in results.items():
        utterances = [m for m in messages if m["type"] == "utterance"]
        assert messages[-1]["type"] == "done", actor
        assert len(utterances) == len(plans[actor]), (actor, [u["text"] for u in utterances])
        for u in utterances:
            assert any(w in u["text"].lower() for w in WORDS), u["text"]
            assert u["label"] in labels and 0.0 < u["confidence"] <= 1.0
        assert utterances[0]["speaker"] == 0  # each session tracks its own voices, from S1
        assert messages[-1]["summary"]["dropped_utterances"] == 0


def test_remote_cli_prints_the_same_jsonl_as_a_local_session(engine, ravdess_dir, tmp_path, capsys):
    import soundfile as sf

    from memocmt.live.vad import VadConfig

    wav = tmp_path / "two.wav"
    sf.write(str(wav), ravdess_stream(ravdess_dir, 4, ["angry", "happy"]), SAMPLE_RATE, subtype="PCM_16")
    remote, local = tmp_path / "remote.jsonl", tmp_path / "local.jsonl"
    # no speculation on either side: whether a tentative segment (shorter audio, so a transcript that may differ) is
    # recognised ahead depends on each pipeline's timing; the final segments are the same
    # and the language given on both sides (the client sends it in `start`): short context from the first utterance
    config = ServerConfig(max_sessions=4, vad=VadConfig(speculate_ms=0))
    with ServerThread(create_app(engine, config)) as quiet:
        assert live_cli.cli(["--server", quiet.ws, "--input", str(wav), "--fast", "--jsonl", str(remote), "--plain",
                             "--language", "en"]) == 0
    shown = capsys.readouterr().out
    assert "utterances: 2" in shown and "door" in shown.lower()
    assert live_cli.cli(["--input", str(wav), "--fast", "--jsonl", str(local), "--plain", "--speculate-ms", "0",
                         "--language", "en"]) == 0
    remote_lines = [json.loads(line) for line in remote.read_text().splitlines()]
    local_lines = [json.loads(line) for line in local.read_text().splitlines()]
    # utterances, then their revisions in hindsight when the session ends (one voice, heard twice)
    assert [r["type"] for r in local_lines] == ["utterance"] * 2 + ["revision"] * 2
    assert [set(r) for r in remote_lines] == [set(r) for r in local_lines]
    for r, l in zip(remote_lines, local_lines):
        assert (r.get("text"), r["label"], r["speaker"], r["index"]) == (l.get("text"), l["label"], l["speaker"], l["index"])
        assert r["confidence"] == pytest.approx(l["confidence"], abs=0.02)
        assert r["model"] == l["model"] and r["asr_context"] == l["asr_context"]
        assert r["asr_language"] == l["asr_language"] == "en"


def test_each_session_is_transcribed_in_its_own_language(engine, server, ravdess_dir, monkeypatch):
    """A session that names English decodes with short context from its first utterance; the next one, in "auto"
    (the server has no --language), with the 30 s window until a detection is sure, then with short context in
    English. The first one's language does not carry over to the second."""
    transcriber = engine.transcriber()
    if transcriber.context != "short" or not transcriber.multilingual:
        pytest.skip("no short context with a multilingual Whisper here")
    calls: list[tuple[str | None, list[str], list[float]]] = []
    transcribe_batch = transcriber.transcribe_batch

    def record(audios, language=None):
        transcripts = transcribe_batch(audios, language)
        calls.append((language, [t.context for t in transcripts], [t.language_probability for t in transcripts]))
        return transcripts

    monkeypatch.setattr(transcriber, "transcribe_batch", record)
    audio = ravdess_stream(ravdess_dir, 7, ["neutral", "happy", "sad"])
    for language in ("en", "auto"):
        del calls[:]
        messages = stream(server.ws, audio, start={"type": "start", "overflow": "wait", "language": language})
        assert messages[0]["asr_language"] == language and messages[-1]["type"] == "done"
        utterances = [m for m in messages if m["type"] == "utterance"]
        assert len(utterances) == 3 and all(u["language"] == "en" for u in utterances), utterances
        languages = [call[0] for call in calls]
        if language == "en":
            assert set(languages) == {"en"} and calls[0][1] == ["short"], calls
        else:
            detecting = languages.index("en")  # the first call after a sure detection
            assert detecting >= 1 and set(languages[:detecting]) == {"auto"} and set(languages[detecting:]) == {"en"}
            # detected from the utterance's own encoder pass, and decoded from it in that language
            assert all(call[1] == ["short"] for call in calls[:detecting]), calls
            assert calls[detecting - 1][2][0] >= STICKY_LANGUAGE_PROBABILITY, calls
            assert "short" in [context for call in calls[detecting:] for context in call[1]], calls


def test_remote_cli_reports_a_busy_server_in_one_sentence(engine, ravdess_dir, tmp_path, capsys):
    import soundfile as sf
    from websockets.sync.client import connect

    wav = tmp_path / "one.wav"
    sf.write(str(wav), ravdess_stream(ravdess_dir, 5, ["sad"]), SAMPLE_RATE, subtype="PCM_16")
    with ServerThread(create_app(engine, ServerConfig(max_sessions=1))) as small:
        with connect(small.ws) as holder:
            holder.send(json.dumps({"type": "start"}))
            holder.recv(10)
            assert live_cli.cli(["--server", small.ws, "--input", str(wav), "--fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "maximum of 1 sessions" in err[0]
    assert live_cli.cli(["--server", "ws://127.0.0.1:9/ws", "--input", str(wav)]) == 2
    assert "Cannot connect" in capsys.readouterr().err


@pytest.mark.requires_cuda
def test_gpu_server_streams_real_speech(ravdess_dir):
    from memocmt.serve.cli import ModelOptions, load_engine

    engine = load_engine(ModelOptions(emotion_device="cuda", asr_device="cuda"))
    try:
        assert engine.emotion.bundle.device == "cuda"
        with ServerThread(create_app(engine, ServerConfig())) as running:
            messages = stream(running.ws, ravdess_stream(ravdess_dir, 6, ["angry", "happy"]))
        utterances = [m for m in messages if m["type"] == "utterance"]
        assert len(utterances) == 2 and messages[-1]["type"] == "done"
        assert all(any(w in u["text"].lower() for w in WORDS) for u in utterances)
    finally:
        engine.close()
