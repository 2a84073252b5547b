"""memocmt-serve end to end with fake models: a real uvicorn server on 127.0.0.1 and websocket clients.

The VAD, resampling, queues, batching and protocol are the real ones; the fake ASR names each
utterance's level ('loud'/'quiet') and the fake emotion model labels it from that text."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from memocmt.audio import SAMPLE_RATE  # noqa: E402
from memocmt.live.display import jsonl_record  # noqa: E402
from memocmt.live.summary import UtteranceResult  # noqa: E402
from memocmt.serve.app import create_app  # noqa: E402
from memocmt.serve.engine import Engine, EngineConfig  # noqa: E402
from memocmt.serve.session import ServerConfig, SessionLimits  # noqa: E402
from tests.pulse import espeak  # noqa: E402
from tests.serve_helpers import FakeEmotion, FakeTranscriber, ServerThread, compose, pcm16, stream  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SENTENCES = ["Good morning, I am very happy to see you.", "Why did you do that?", "We will walk along the river."]
START = {"type": "start", "sample_rate": SAMPLE_RATE, "format": "pcm_s16le", "channels": 1}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return compose([espeak(s) for s in SENTENCES], gap_s=0.8, scale=0.8)


def serve(emotion=None, transcriber=None, engine_config=None, **server):
    emotion = emotion or FakeEmotion()
    transcriber = transcriber or FakeTranscriber()
    engine = Engine(emotion, lambda context: transcriber, "full", engine_config or EngineConfig())
    limits = SessionLimits(**{k: server.pop(k) for k in ("queue_depth", "max_session_s") if k in server})
    return ServerThread(create_app(engine, ServerConfig(limits=limits, **server)), server.get("max_frame_bytes", 1 << 18))


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def kinds(messages: list[dict]) -> list[str]:
    return [m["type"] for m in messages]


def stream_loud_and_quiet(server, speech, start=None) -> dict[str, list[dict]]:
    """Four sessions at once, two of `speech` loud and two very quiet: each session's messages by name."""
    results: dict[str, list[dict]] = {}

    def run(name, scale):
        results[name] = stream(server.ws, np.clip(speech * scale, -1, 1), **({"start": start} if start else {}))

    threads = [threading.Thread(target=run, args=(f"{kind}{i}", scale))
               for i in range(2) for kind, scale in (("loud", 1.0), ("quiet", 0.02))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results



def test_protocol_ready_utterances_done(speech):
    with serve() as server:
        messages = stream(server.ws, speech)
    assert messages[0]["type"] == "ready" and messages[0]["labels"] == FakeEmotion.labels
    assert messages[0]["asr_model"] == "fake-asr" and messages[0]["model"] == "fake-emotion"
    utterances = [m for m in messages if m["type"] == "utterance"]
    # one voice heard fewer times than its window: every utterance is classified again when the session ends
    assert kinds(messages) == ["ready"] + ["utterance"] * len(utterances) + ["revision"] * len(utterances) + ["done"]
    revisions = [m for m in messages if m["type"] == "revision"]
    assert [r["index"] for r in revisions] == [u["index"] for u in utterances]
    assert all(r["previous_label"] == "angry" and r["model"] == "fake-emotion" for r in revisions)
    assert len(utterances) == len(SENTENCES)
    jsonl_keys = set(jsonl_record(UtteranceResult(0, 0.0, 0.0, "", None, {}), {
        "device": None, "asr_model": None, "model": None, "asr_context": None, "asr_language": None, "speaker_tracking": False}))
    for i, u in enumerate(utterances, 1):
        assert set(u) == jsonl_keys | {"type"}  # the fields of a memocmt-live --jsonl line
        assert u["index"] == i and u["text"] == "loud speech" and u["label"] == "angry"
        assert {"asr", "emotion", "eos_to_result"} <= set(u["timings_ms"])
    summary = messages[-1]["summary"]
    assert summary["utterances"] == len(SENTENCES) and summary["dropped_utterances"] == 0
    assert summary["end_reason"] == "stopped by the client"


def test_the_fusion_head_hears_each_transcripts_language(speech):
    """The server passes the transcript's language to the fusion head with every utterance and with its revision
    in hindsight, so a model with a language policy can classify a foreign one from its audio alone."""
    emotion = FakeEmotion()
    with serve(emotion=emotion, transcriber=FakeTranscriber(spoken="de")) as server:
        messages = stream(server.ws, speech)
    utterances = [m for m in messages if m["type"] == "utterance"]
    assert utterances and all(u["language"] == "de" for u in utterances)
    assert emotion.languages == ["de"] * 2 * len(utterances)  # each utterance, then its revision


def test_busy_when_every_slot_is_taken(speech):
    with serve(max_sessions=1) as server:
        with connect(server.ws) as first:
            first.send(json.dumps(START))
            assert json.loads(first.recv(10))["type"] == "ready"
            with connect(server.ws) as second:
                assert json.loads(second.recv(10))["type"] == "busy"
                with pytest.raises(ConnectionClosed) as info:
                    second.recv(10)
                assert info.value.rcvd.code == 1013
        time.sleep(0.3)  # the first slot is released on disconnect
        assert kinds(stream(server.ws, speech[: 3 * SAMPLE_RATE]))[0] == "ready"
        status, body = get(server.http + "/metrics")
        assert "memocmt_sessions_rejected_total 1.0" in body


def test_sessions_are_isolated_and_emotion_batches_across_them(speech):
    emotion = FakeEmotion(delay_s=0.05)
    with serve(emotion=emotion, engine_config=EngineConfig(max_batch=8, batch_wait_ms=20)) as server:
        results = stream_loud_and_quiet(server, speech)
    for name, messages in results.items():
        texts = {m["text"] for m in messages if m["type"] == "utterance"}
        assert texts == {"loud speech" if name.startswith("loud") else "quiet speech"}, name
        assert messages[-1]["type"] == "done"
    assert sorted(t.updates for t in emotion.trackers) == sorted(m[-1]["summary"]["utterances"] for m in results.values())
    assert max(emotion.batches["audio"]) > 1  # four sessions' utterances shared graph calls


@pytest.mark.parametrize("batchable", [True, False])
def test_waiting_utterances_of_several_sessions_share_one_asr_call(speech, batchable):
    transcriber = FakeTranscriber(delay_s=0.3, batches=batchable)  # False: it would transcribe a batch one by one
    with serve(transcriber=transcriber) as server:  # in a language given: batchable from the first utterance
        results = stream_loud_and_quiet(server, speech, start={**START, "overflow": "wait", "language": "en"})
        metrics = get(server.http + "/metrics")[1]
    for name, messages in results.items():  # a batch mixes sessions; each gets its own transcripts back
        texts = {m["text"] for m in messages if m["type"] == "utterance"}
        assert texts == {"loud speech" if name.startswith("loud") else "quiet speech"}, name
        assert messages[-1]["type"] == "done" and messages[-1]["summary"]["dropped_utterances"] == 0
    if batchable:
        assert 1 < max(transcriber.batches) <= len(results)  # at most one utterance per session in a call
    else:
        assert set(transcriber.batches) == {1}  # so no result waits for the others' decoding
    assert 'memocmt_batch_size_count{graph="asr"}' in metrics


def test_each_session_keeps_its_own_language(speech):
    """A session that names its language is transcribed in it from its first utterance; one in "auto" with the
    30 s window (detection) until a detection is sure, then in the detected language; neither changes the other's."""
    from memocmt.live.asr import STICKY_LANGUAGE_PROBABILITY
    from memocmt.live.vad import VadConfig

    unsure, sure = STICKY_LANGUAGE_PROBABILITY - 0.1, STICKY_LANGUAGE_PROBABILITY
    transcriber = FakeTranscriber(delay_s=0.1, spoken="de", probabilities=(unsure, sure))
    results: dict[str, list[dict]] = {}
    # no tentative utterances: each final one is transcribed once, so the calls can be counted
    with serve(transcriber=transcriber, vad=VadConfig(speculate_ms=0)) as server:
        def run(language):
            results[language] = stream(server.ws, speech, start={**START, "overflow": "wait", "language": language})

        threads = [threading.Thread(target=run, args=(language,)) for language in ("en", "auto")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for language, spoken in (("en", "en"), ("auto", "de")):
        messages = results[language]
        assert messages[0]["type"] == "ready" and messages[0]["asr_language"] == language
        utterances = [m for m in messages if m["type"] == "utterance"]
        assert len(utterances) == len(SENTENCES) and messages[-1]["type"] == "done"
        assert [u["language"] for u in utterances] == [spoken] * len(SENTENCES)
        assert all(u["asr_language"] == language for u in utterances)  # the setting; "language" says what was heard
    per_language = {}
    for language, contexts in transcriber.calls:
        per_language.setdefault(language, []).extend(contexts)
    # "en": short context from the first utterance; "auto": the 30 s window until the second, sure, detection
    assert per_language == {"en": ["short"] * 3, "auto": ["full"] * 2, "de": ["short"]}
    languages = [language for language, _contexts in transcriber.calls if language != "en"]
    assert languages == ["auto", "auto", "de"]


def test_a_batch_holds_utterances_of_one_language(speech):
    """Utterances of sessions in different languages that wait together are decoded in one call per language."""
    transcriber = FakeTranscriber(delay_s=0.3)
    results: dict[str, list[dict]] = {}
    with serve(transcriber=transcriber) as server:
        def run(name, language):
            results[name] = stream(server.ws, speech, start={**START, "overflow": "wait", "language": language})

        threads = [threading.Thread(target=run, args=(f"{language}{i}", language))
                   for i in range(2) for language in ("en", "pl")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for name, messages in results.items():
        utterances = [m for m in messages if m["type"] == "utterance"]
        assert len(utterances) == len(SENTENCES) and messages[-1]["type"] == "done", name
        assert {u["language"] for u in utterances} == {name[:2]}, name  # each transcribed in its session's language
    assert max(transcriber.batches) == 2  # batched, two sessions per language: never the four together
    assert {language for language, _contexts in transcriber.calls} == {"en", "pl"}


def test_a_language_the_asr_model_cannot_transcribe_is_refused(speech):
    """A bad `language` in start gets one sentence, and the client may start again; an English-only model takes
    only English, and "auto" is English there; without a language in start, a session takes the server's."""
    for transcriber, refused, taken in ((FakeTranscriber(), [("xx", "not a language code"), (5, "language must be")],
                                         ("PL", "pl")),
                                        (FakeTranscriber(multilingual=False), [("pl", "English-only")], ("auto", "en"))):
        with serve(transcriber=transcriber) as server:
            with connect(server.ws) as ws:
                for language, words in refused:
                    ws.send(json.dumps({**START, "language": language}))
                    reply = json.loads(ws.recv(10))
                    assert reply["type"] == "error" and words in reply["message"], reply
                ws.send(json.dumps({**START, "language": taken[0]}))
                ready = json.loads(ws.recv(10))
                assert ready["type"] == "ready" and ready["asr_language"] == taken[1]
            body = get(server.http + "/metrics")[1]
            assert f"memocmt_protocol_errors_total {len(refused)}.0" in body and "memocmt_sessions_total 1.0" in body
    transcriber = FakeTranscriber(language="pl")  # memocmt-serve --language pl
    with serve(transcriber=transcriber) as server:
        messages = stream(server.ws, speech[: 3 * SAMPLE_RATE])
        assert messages[0]["asr_language"] == "pl" and messages[-1]["type"] == "done"
        assert {language for language, _contexts in transcriber.calls} == {"pl"}
        assert json.loads(get(server.http + "/healthz")[1])["asr_language"] == "pl"


def test_unbatched_config_runs_one_at_a_time(speech):
    emotion, transcriber = FakeEmotion(), FakeTranscriber(delay_s=0.1)
    with serve(emotion=emotion, transcriber=transcriber,
               engine_config=EngineConfig(max_batch=1, asr_max_batch=1)) as server:
        threads = [threading.Thread(target=stream, args=(server.ws, speech)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert set(emotion.batches["audio"]) == {1} and set(emotion.batches["fusion"]) == {1}
    assert set(transcriber.batches) == {1}


def test_batching_options():
    from memocmt.serve.cli import batching_config, build_parser, cli

    parser = build_parser()
    assert batching_config(parser.parse_args([])).asr_max_batch == EngineConfig().asr_max_batch
    config = batching_config(parser.parse_args(["--asr-max-batch", "3", "--max-batch", "5"]))
    assert (config.max_batch, config.asr_max_batch) == (5, 3)
    config = batching_config(parser.parse_args(["--asr-max-batch", "3", "--no-batching"]))
    assert (config.max_batch, config.asr_max_batch) == (1, 1)
    with pytest.raises(SystemExit):
        cli(["--asr-max-batch", "0"])


def test_bad_clients_get_one_sentence_and_the_session_survives(speech):
    rng = np.random.default_rng(1)
    with serve() as server:
        with connect(server.ws) as ws:
            ws.send(b"\x00\x01" * 100)  # audio before start
            assert json.loads(ws.recv(10))["type"] == "error"
            ws.send(json.dumps({"type": "stop"}))
            assert "start" in json.loads(ws.recv(10))["message"]
            ws.send(json.dumps(START))
            assert json.loads(ws.recv(10))["type"] == "ready"
            ws.send("not json")
            assert "JSON" in json.loads(ws.recv(10))["message"]
            ws.send(json.dumps({"type": "start"}))
            assert "already" in json.loads(ws.recv(10))["message"]
            ws.send(rng.integers(0, 256, 12345, dtype=np.uint8).tobytes())  # garbage of odd length is noise
            data = pcm16(speech)
            for i in range(0, len(data), 4097):  # odd frame sizes split samples
                ws.send(data[i : i + 4097])
            ws.send(json.dumps({"type": "stop"}))
            messages = []
            while not messages or messages[-1]["type"] != "done":
                messages.append(json.loads(ws.recv(30)))
            assert sum(m["type"] == "utterance" for m in messages) >= len(SENTENCES)
        status, health = get(server.http + "/healthz")
        assert status == 200 and json.loads(health)["status"] == "ok"


def test_oversized_frame_closes_that_session_only(speech):
    with serve(max_frame_bytes=4096) as server:
        with connect(server.ws, max_size=None) as ws:
            ws.send(json.dumps(START))
            json.loads(ws.recv(10))
            ws.send(b"\x00" * 10000)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    ws.recv(10)
            assert info.value.rcvd.code == 1009
        assert kinds(stream(server.ws, speech[: 4 * SAMPLE_RATE], chunk_ms=100))[-1] == "done"


def test_disconnect_mid_utterance_releases_the_slot(speech):
    transcriber = FakeTranscriber(delay_s=0.2)
    with serve(transcriber=transcriber, max_sessions=1) as server:
        ws = connect(server.ws)
        ws.send(json.dumps(START))
        json.loads(ws.recv(10))
        ws.send(pcm16(speech[: int(4.5 * SAMPLE_RATE)]))  # ends inside the second sentence
        time.sleep(0.1)
        ws.close()
        deadline = time.monotonic() + 10
        while json.loads(get(server.http + "/healthz")[1])["sessions"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(get(server.http + "/healthz")[1])["sessions"] == 0
        assert kinds(stream(server.ws, speech))[-1] == "done"


def test_a_ten_times_realtime_client_does_not_stall_a_realtime_one(speech):
    transcriber = FakeTranscriber(delay_s=0.15)
    out: dict[str, list[dict]] = {}
    with serve(transcriber=transcriber, queue_depth=2) as server:
        fast = threading.Thread(target=lambda: out.setdefault("fast", stream(
            server.ws, np.tile(speech, 3), speed=10.0, chunk_ms=20, start={**START, "overflow": "drop"})))
        fast.start()
        out["live"] = stream(server.ws, speech, speed=1.0)
        fast.join(60)
    live = [m for m in out["live"] if m["type"] == "utterance"]
    assert len(live) == len(SENTENCES) and out["live"][-1]["summary"]["dropped_utterances"] == 0
    assert max(m["timings_ms"]["eos_to_result"] for m in live) < 2000
    assert out["fast"][-1]["type"] == "done"  # dropped or not, the fast client is answered and counted
    fast_summary = out["fast"][-1]["summary"]
    assert fast_summary["utterances"] + fast_summary["dropped_utterances"] >= 3 * len(SENTENCES) - 1


def test_idle_and_length_limits(speech):
    with serve(idle_timeout_s=0.5, max_session_s=2.0) as server:
        with connect(server.ws) as ws:
            ws.send(json.dumps(START))
            json.loads(ws.recv(10))
            assert "Nothing received" in json.loads(ws.recv(10))["message"]
        messages = stream(server.ws, speech)
    assert any(m["type"] == "error" and "maximum length" in m["message"] for m in messages)
    assert messages[-1]["summary"]["audio_s"] == pytest.approx(2.0, abs=0.01)


def test_token_is_required_when_set(speech):
    with serve(token="s3cret") as server:
        with pytest.raises(InvalidStatus):
            connect(server.ws, open_timeout=5)
        assert get(server.http + "/metrics")[0] == 401
        assert get(server.http + "/healthz")[0] == 200
        assert kinds(stream(server.ws + "?token=s3cret", speech[: 3 * SAMPLE_RATE]))[0] == "ready"
        assert kinds(stream(server.ws, speech[: 3 * SAMPLE_RATE], headers={"Authorization": "Bearer s3cret"}))[0] == "ready"
        assert get(server.http + "/metrics", {"Authorization": "Bearer s3cret"})[0] == 200


def test_page_healthz_and_metrics(speech):
    with serve() as server:
        stream(server.ws, speech)
        status, page = get(server.http + "/")
        assert status == 200 and "getUserMedia" not in page and "static/app.js" in page
        for name in ("app.js", "chart.js", "pcm-worklet.js", "style.css"):
            assert get(server.http + "/static/" + name)[0] == 200
        assert "echoCancellation: false" in get(server.http + "/static/app.js")[1]
        health = json.loads(get(server.http + "/healthz")[1])
        assert health["protocol"] == "memocmt.v1" and health["max_sessions"] == 8
        metrics = get(server.http + "/metrics")[1]
    assert "memocmt_utterances_total 3.0" in metrics
    assert 'memocmt_stage_latency_seconds_count{stage="eos_to_result"} 3.0' in metrics
    assert 'memocmt_batch_size_count{graph="audio"}' in metrics and "memocmt_dropped_audio_seconds_total" in metrics
