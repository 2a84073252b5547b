"""The GE2E voice encoder: NumPy front end, ONNX export against PyTorch, tracking by embeddings, fallback."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from memocmt import voice
from memocmt.speakers import EmbeddingVoices, SpeakerTracker, VoiceError, VoiceProjection

needs_wheel = pytest.mark.skipif(voice.wheel_weights() is None or importlib.util.find_spec("torch") is None,
                                 reason="the voice encoder's export needs the resemblyzer wheel and PyTorch")


def speech_like(seconds: float, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A voiced harmonic tone with a syllable-rate envelope and a little noise, float32 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * voice.SAMPLE_RATE)) / voice.SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 10))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * tone * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def test_partials_cover_the_utterance_as_the_encoder_was_trained():
    assert voice.partial_starts(int(3.0 * voice.SAMPLE_RATE)) == [0, 77, 154]
    assert voice.partial_starts(int(0.5 * voice.SAMPLE_RATE)) == [0]  # shorter than one partial: one, zero-padded
    # the last partial is dropped when the audio covers less than 3/4 of it
    assert voice.partial_starts(int(2.5 * voice.SAMPLE_RATE)) == [0, 77]
    mels = voice.partial_mels(speech_like(3.0))
    assert mels.shape == (3, voice.PARTIAL_FRAMES, voice.N_MELS) and mels.dtype == np.float32
    assert (mels >= 0).all() and 0 < mels.mean() < 10


def test_quiet_audio_is_raised_loud_audio_and_silence_are_not():
    quiet = 0.001 * speech_like(1.0)
    level = 10 * np.log10(np.mean(np.square(voice.normalize_volume(quiet), dtype=np.float64)))
    assert abs(level - voice.TARGET_DBFS) < 0.01
    loud = speech_like(1.0)
    assert voice.normalize_volume(loud) is loud
    assert not voice.normalize_volume(np.zeros(1600, np.float32)).any()


def test_mel_front_end_matches_librosa():
    librosa = pytest.importorskip("librosa")
    audio = speech_like(2.3)
    ref = librosa.feature.melspectrogram(y=audio, sr=voice.SAMPLE_RATE, n_fft=voice.N_FFT, hop_length=voice.HOP,
                                         n_mels=voice.N_MELS).T
    ours = voice.mel_power(audio)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


def test_bad_audio_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="mono audio"):
        voice.partial_mels(np.zeros((2, 1600), np.float32))
    with pytest.raises(ValueError, match="at least one audio sample"):
        voice.partial_mels(np.zeros(0, np.float32))


@needs_wheel
def test_onnx_voice_graph_matches_pytorch_and_tells_voices_apart(tmp_path):
    import torch

    from memocmt.onnx.voice import Ge2eEncoder, export_voice_graph

    weights = voice.wheel_weights()
    out = tmp_path / "voice.onnx"
    diff = export_voice_graph(weights.path, out)
    assert out.is_file() and diff < 1e-4
    encoder = voice.VoiceEncoder(out)
    model = Ge2eEncoder.from_checkpoint(weights.path)
    low, low_again, high = speech_like(3.0, 110, seed=1), speech_like(2.0, 110, seed=2), speech_like(3.0, 230, seed=3)
    ours = [encoder.embed(a) for a in (low, low_again, high)]
    with torch.no_grad():
        ref = [voice.pool_partials(model(torch.from_numpy(voice.partial_mels(a))).numpy()) for a in (low, low_again, high)]
    assert max(float(np.abs(o - r).max()) for o, r in zip(ours, ref)) < 1e-4
    assert all(abs(np.linalg.norm(o) - 1) < 1e-5 and o.shape == (voice.EMBED_DIMS,) for o in ours)
    assert ours[0] @ ours[1] > ours[0] @ ours[2]  # the same "voice" is nearer than another pitch


@needs_wheel
def test_damaged_weights_are_refused_in_one_sentence(tmp_path):
    from memocmt.onnx.export import ExportError
    from memocmt.onnx.voice import Ge2eEncoder

    bad = tmp_path / "pretrained.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="Cannot read the voice encoder weights"):
        Ge2eEncoder.from_checkpoint(bad)


class FakeEncoder:
    """Audio whose first sample names a speaker -> that speaker's direction plus per-utterance noise."""

    def __init__(self, n_speakers: int = 4, dims: int = 16, noise: float = 0.35, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.directions = rng.standard_normal((n_speakers, dims))
        self.noise, self.rng, self.calls = noise, np.random.default_rng(seed + 1), 0

    def embed(self, audio):
        self.calls += 1
        e = self.directions[int(audio[0])]
        e = e / np.linalg.norm(e) + self.noise * self.rng.standard_normal(e.shape) / np.sqrt(len(e))
        return (e / np.linalg.norm(e)).astype(np.float32)


def utterance(speaker: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((2, 1, 3), float(speaker), np.float32), np.full(160, float(speaker), np.float32)


def test_tracker_tells_voices_apart_by_embeddings():
    encoder = FakeEncoder()
    tracker = SpeakerTracker(EmbeddingVoices(encoder, threshold=0.35), window=5)
    assert tracker.needs_audio
    truth = [0, 1, 0, 0, 2, 1, 2, 0, 1, 1, 2, 0] * 2
    assigned = []
    for s in truth:
        stats, audio = utterance(s)
        pooled, voice_index = tracker.update(stats, audio=audio)
        assigned.append(voice_index)
        assert pooled.shape == (1, 2, 1, 3)
    assert len(tracker) == 3 and len(set(zip(truth, assigned))) == 3  # one voice per speaker and back
    # each voice's window holds only its own speaker's statistics
    assert tracker.update(*utterance(2)[:1], audio=utterance(2)[1])[0][0, 0, 0, 0] == pytest.approx(2.0)


def test_embeddings_need_the_audio_and_a_tentative_is_embedded_once():
    encoder = FakeEncoder()
    tracker = SpeakerTracker(EmbeddingVoices(encoder))
    stats, audio = utterance(1)
    with pytest.raises(VoiceError, match="need the utterance's audio"):
        tracker.update(stats)
    _, voice_index = tracker.update(stats, commit=False, audio=audio)
    assert voice_index == 0 and len(tracker) == 0 and encoder.calls == 1
    assert tracker.update(stats) == (pytest.approx(tracker._adapters[0].update(stats, commit=False)), 0)
    assert len(tracker) == 1 and encoder.calls == 1  # the confirmed tentative reused its embedding
    signature = tracker.signature(None, audio)  # computed apart, as the server does while Whisper decodes
    assert tracker.update(stats, signature=signature)[1] == 0 and encoder.calls == 2


def test_cosine_distance_and_young_voice_widening():
    voices = EmbeddingVoices(FakeEncoder(), threshold=0.3)
    a, b = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    assert voices.distance(a, b)[0] == pytest.approx([0.0, 1.0, 2.0])
    counts = np.array([1.0, 20.0])
    assert voices.widening(counts)[1] == pytest.approx(1.0) and voices.widening(counts)[0] > 1.9
    assert (EmbeddingVoices(FakeEncoder(), widen_young=False).widening(counts) == 1).all()


def test_without_the_wheel_the_tracker_keeps_the_models_signatures(monkeypatch):
    projection = VoiceProjection(np.zeros(6), np.eye(6, 3))
    monkeypatch.setattr(voice, "wheel_weights", lambda: None)
    voice.voice_encoder.cache_clear()
    try:
        assert voice.voice_encoder() is None
        assert voice.tracker_voices(projection, "ge2e") is projection
        assert voice.tracker_voices(None, "ge2e") is None
        tracker = SpeakerTracker(voice.tracker_voices(projection, "ge2e"))
        assert not tracker.needs_audio and tracker.update(np.ones((2, 2, 3), np.float32))[1] == 0
    finally:
        voice.voice_encoder.cache_clear()


def test_an_unusable_voice_graph_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    projection = VoiceProjection(np.zeros(6), np.eye(6, 3))
    broken = tmp_path / "voice.onnx"
    broken.write_bytes(b"not a graph")
    monkeypatch.setattr(voice, "wheel_weights", lambda: voice.VoiceWeights(tmp_path / "pretrained.pt", "0" * 64))
    monkeypatch.setattr(voice, "ensure_voice_graph", lambda weights: broken)
    voice.voice_encoder.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="memocmt"):
            assert voice.tracker_voices(projection, "ge2e") is projection
        assert "voice encoder is unusable" in caplog.text
    finally:
        voice.voice_encoder.cache_clear()


def test_the_live_model_embeds_the_voice_with_the_audio_encoding(monkeypatch):
    from memocmt.live.pipeline import BundleEmotionModel
    from memocmt.results import Prediction

    class Bundle:
        speaker_norm, uses_audio, uses_text, labels, speaker_prior = "utterance", True, False, ["a", "b"], None
        voices = VoiceProjection(np.zeros(3), np.eye(3, 2))

        def encode_audio(self, audio):
            return float(audio[0])

        def audio_stats(self, encoding):
            return np.full((1, 2, 1, 3), encoding, np.float32)

        def classify(self, audio, text, stats, language=None):
            return Prediction.from_probabilities(self.labels, [0.5, 0.5])

    encoder = FakeEncoder()
    monkeypatch.setattr(voice, "voice_encoder", lambda: encoder)
    assert BundleEmotionModel(Bundle(), "fake").adapter.voices is Bundle.voices  # the model's signatures by default
    assert BundleEmotionModel(Bundle(), "fake", speakers="one").adapter.voices is None
    model = BundleEmotionModel(Bundle(), "fake", speakers="ge2e")
    assert model.tracks_speakers and isinstance(model.adapter.voices, EmbeddingVoices)
    voices = []
    for s in (0, 0, 3, 0, 3):
        audio = np.full(160, float(s), np.float32)
        voices.append(model.predict(audio, "", audio_features=model.encode_audio(audio)).speaker)
    assert voices == [0, 0, 1, 0, 1] and encoder.calls == 5
    assert model.predict(np.zeros(160, np.float32), "", commit=False).speaker == 0  # no precomputed features
    model.commit_tentative()
    assert encoder.calls == 6 and model.adapter._counts == [4, 2]
    assert BundleEmotionModel(Bundle(), "fake", track_speakers=False).adapter.voices is None
