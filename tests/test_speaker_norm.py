"""Speaker normalisation: offsets, their invariance, training, export, runtime, evaluation and the live adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memocmt.fusion import FusionHead, utterance_means
from memocmt.speaker_norm import SpeakerAdapter, group_offsets
from memocmt.speaker_norm import utterance_means as utterance_means_np


def make_head(speaker_norm=True, modalities="both"):
    torch.manual_seed(0)
    return FusionHead(audio_dim=24, text_dim=16, audio_layers=3, text_layers=2, d_model=32, n_heads=4, n_classes=4,
                      head_dims=(16,), pooling="max+stats", modalities=modalities, layer_mix=True, residual=True,
                      speaker_norm=speaker_norm).eval()


def speaker_batch(seed=0):
    """Two speakers, three utterances each, padded with garbage; returns states, lengths, speakers."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 9, 7, 6, 8, 4])
    states = torch.full((6, 3, 9, 24), 7.0)
    for i, n in enumerate(lengths):
        states[i, :, :n] = torch.randn(3, int(n), 24, generator=g)
    return states, lengths, ["a", "a", "a", "b", "b", "b"]


def test_numpy_and_torch_utterance_means_agree_and_ignore_padding():
    states, lengths, _ = speaker_batch()
    means = utterance_means(states, lengths)
    assert torch.allclose(means[1], states[1, :, :9].mean(dim=1), atol=1e-6)
    assert np.allclose(utterance_means_np(states.numpy(), lengths.numpy()), means.numpy(), atol=1e-5)


def test_group_offsets_average_each_speaker_and_keep_unknown_speakers_alone():
    means = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 3), np.float32)
    offsets = group_offsets(means, ["a", "b", "a", None, ""])
    assert np.allclose(offsets[0], 1.0) and np.allclose(offsets[2], 1.0)  # (0 + 2) / 2
    assert np.allclose(offsets[1], 1.0)  # b alone
    assert np.allclose(offsets[3], 3.0) and np.allclose(offsets[4], 4.0)  # unknown: their own means
    with pytest.raises(ValueError, match="5 utterance means but 2 speakers"):
        group_offsets(means, ["a", "b"])


def test_a_speaker_wide_shift_of_the_states_does_not_change_the_logits():
    """What speaker normalisation is for: a voice's constant colouring of every state cancels out."""
    head = make_head()
    states, lengths, speakers = speaker_batch()
    text, text_lengths = torch.randn(6, 2, 4, 16), torch.tensor([4, 3, 4, 2, 4, 4])
    shift = torch.zeros_like(states)
    shift[3:, :, :] = torch.randn(1, 3, 1, 24) * 3.0  # speaker b's voice moves all its frames
    shifted = states + shift
    with torch.no_grad():
        plain = [head(s, lengths, text, text_lengths, torch.from_numpy(
            group_offsets(utterance_means(s, lengths).numpy(), speakers))) for s in (states, shifted)]
        unnormalised = make_head(speaker_norm=False)
        raw = [unnormalised(s, lengths, text, text_lengths) for s in (states, shifted)]
    assert torch.allclose(plain[0], plain[1], atol=1e-4)
    assert not torch.allclose(raw[0][3:], raw[1][3:], atol=1e-2)  # the test can fail: without it the logits move


def test_without_offsets_each_utterance_is_centred_on_its_own_mean():
    head = make_head()
    states, lengths, _ = speaker_batch()
    text, text_lengths = torch.randn(6, 2, 4, 16), torch.full((6,), 4)
    with torch.no_grad():
        default = head(states, lengths, text, text_lengths)
        own = head(states, lengths, text, text_lengths, utterance_means(states, lengths))
        other = head(states, lengths, text, text_lengths, torch.zeros(6, 3, 24))
    assert torch.allclose(default, own, atol=1e-5)
    assert not torch.allclose(default, other, atol=1e-3)


def test_speaker_adapter_averages_a_window_and_resets():
    adapter = SpeakerAdapter(window=2)
    first = adapter.update(np.full((2, 3), 1.0, np.float32))
    assert first.shape == (1, 2, 3) and np.allclose(first, 1.0)
    assert np.allclose(adapter.update(np.full((1, 2, 3), 3.0, np.float32)), 2.0)
    assert np.allclose(adapter.update(np.full((2, 3), 5.0, np.float32)), 4.0)  # the first fell out of the window
    assert len(adapter) == 2
    adapter.reset()
    assert len(adapter) == 0
    with pytest.raises(ValueError, match="at least 1"):
        SpeakerAdapter(window=0)
    with pytest.raises(ValueError, match="one utterance at a time"):
        adapter.update(np.zeros((2, 2, 3), np.float32))


# ---------------------------------------------------------------------- training and evaluation


def test_training_feeds_each_speaker_its_offset(tmp_path):
    from tests.test_train import save_tiny_encoders, tiny_config, write_tone_corpus

    from memocmt.embed_cache import attach_speaker_offsets
    from memocmt.model import load_checkpoint
    from memocmt.train import CachedDataset, collate_cached, train

    audio_dir, text_dir = save_tiny_encoders(tmp_path / "enc")
    tiny = {"audio": str(audio_dir), "text": str(text_dir), "manifest": str(write_tone_corpus(tmp_path / "data"))}
    config = tiny_config(tiny, tmp_path, epochs=2)
    config.model["speaker_norm"] = True
    run = train(config, tmp_path / "run", progress=False)
    model = load_checkpoint(run / "best.safetensors")
    assert model.config.speaker_norm and model.speaker_norm
    assert (run / "test_metrics.json").is_file()

    from memocmt.embed_cache import EmbeddedSplit

    states = [torch.randn(2, n, 4) for n in (3, 5, 4)]
    split = EmbeddedSplit(states, [None] * 3, [0, 1, 0], ["x", "y", "z"], [], [("c", "s1"), ("c", "s1"), None])
    attach_speaker_offsets([split])
    expected = (states[0].mean(dim=1) + states[1].mean(dim=1)) / 2
    assert torch.allclose(split.offsets[0], expected, atol=1e-5) and torch.allclose(split.offsets[1], expected, atol=1e-5)
    assert torch.allclose(split.offsets[2], states[2].mean(dim=1), atol=1e-5)
    inputs, _ = collate_cached([CachedDataset(split)[i] for i in range(3)])
    assert inputs[4].shape == (3, 2, 4)


class _Recorder:
    """A speaker_norm predictor that records the offsets it is given."""

    labels = ["neutral", "angry"]
    speaker_norm = True

    def __init__(self):
        self.offsets = []

    def audio_means(self, audios):
        return np.stack([np.full((1, 2), float(a.size), np.float32) for a in audios])

    def predict_batch(self, audios, texts, audio_offsets=None):
        from memocmt.results import Prediction

        self.offsets.append(audio_offsets)
        return [Prediction.from_probabilities(self.labels, np.array([0.6, 0.4], np.float32)) for _ in audios]


def test_evaluation_offsets_average_each_speakers_utterances(tmp_path):
    import soundfile as sf

    from memocmt.evaluate import evaluate_manifest
    from memocmt.manifest import Manifest, Utterance

    items = []
    for i, (speaker, n) in enumerate([("s1", 1600), ("s1", 3200), ("s2", 4800)]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.zeros(n, np.float32) + 0.01, 16000)
        items.append(Utterance(audio=path, text="", label="neutral", speaker=speaker, split="test"))
    predictor = _Recorder()
    evaluate_manifest(predictor, Manifest.from_items(items, ["neutral", "angry"]), batch_size=2, progress=False)
    offsets = np.concatenate(predictor.offsets)
    assert np.allclose(offsets[:, 0, 0], [2400, 2400, 4800])


# ---------------------------------------------------------------------- export and runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from tests.tiny_models import build_tiny_model

    from memocmt.onnx_export import export_bundle

    root = tmp_path_factory.mktemp("speaker-norm")
    model = build_tiny_model(root / "models", speaker_norm=True)
    return model, export_bundle(model, root / "bundle")


def _clips(n=3):
    rng = np.random.default_rng(1)
    return [(0.2 * np.sin(np.arange(8000 + 2000 * i) * (0.05 + 0.01 * i)) + 0.01 * rng.standard_normal(8000 + 2000 * i))
            .astype(np.float32) for i in range(n)]


def test_fusion_graph_takes_offsets_and_matches_pytorch(exported):
    from memocmt.runtime import load_bundle

    model, result = exported
    names = [i["name"] for i in result.manifest["graphs"]["fusion"]["inputs"]]
    assert names[-1] == "audio_offset"
    bundle = load_bundle(result.path, "cpu")
    assert bundle.speaker_norm
    clips, texts = _clips(), ["i am so angry", "the door is open", "hello"]
    offsets = np.repeat(bundle.audio_means(clips).mean(axis=0, keepdims=True), 3, axis=0)
    torch_means = model.audio_means(clips)
    assert np.allclose(bundle.audio_means(clips), torch_means, atol=1e-3)
    for given in (None, offsets):
        ours = np.stack([list(p.probabilities.values()) for p in bundle.predict_batch(clips, texts, given)])
        ref = np.stack([list(p.probabilities.values()) for p in model.predict_batch(clips, texts, given)])
        assert np.allclose(ours, ref, atol=1e-3)
    differs = [p.probabilities for p in bundle.predict_batch(clips, texts, np.zeros_like(offsets))]
    assert differs != [p.probabilities for p in bundle.predict_batch(clips, texts, offsets)]
    with pytest.raises(ValueError, match="2 speaker offsets for 3 utterances"):
        bundle.predict_batch(clips, texts, offsets[:2])


def test_live_model_adapts_to_the_session_speaker(exported):
    from memocmt.live.pipeline import BundleEmotionModel
    from memocmt.runtime import load_bundle

    _, result = exported
    bundle = load_bundle(result.path, "cpu")
    live = BundleEmotionModel(bundle, "tiny", adapt_window=2)
    clips = _clips()
    live.predict(clips[0], "hello")
    assert len(live.adapter) == 1
    second = live.predict(clips[1], "hello")
    expected = bundle.classify(bundle.encode_audio(clips[1]), bundle.encode_text("hello"),
                               bundle.audio_means(clips[:2]).mean(axis=0, keepdims=True))
    assert np.allclose(list(second.probabilities.values()), list(expected.probabilities.values()), atol=1e-5)
