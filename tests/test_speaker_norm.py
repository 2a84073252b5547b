"""Speaker normalisation: offsets, their invariance, training, export, runtime, evaluation and the live adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memocmt.fusion import FusionHead, pool_with_prior, utterance_stats
from memocmt.speaker_norm import SpeakerAdapter, group_stats, pool_stats
from memocmt.speaker_norm import utterance_stats as utterance_stats_np


def make_head(speaker_norm="mean+std", modalities="both"):
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


def test_numpy_and_torch_utterance_stats_agree_and_ignore_padding():
    states, lengths, _ = speaker_batch()
    stats = utterance_stats(states, lengths)
    assert stats.shape == (6, 2, 3, 24)
    frames = states[0, :, :5]
    assert torch.allclose(stats[0, 0], frames.mean(dim=1), atol=1e-6)
    assert torch.allclose(stats[0, 1], frames.var(dim=1, unbiased=False), atol=1e-5)
    assert np.allclose(utterance_stats_np(states.numpy(), lengths.numpy()), stats.numpy(), atol=1e-5)


def test_pooled_stats_are_those_of_all_frames_with_equal_utterance_weights():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, (1, 2, 40, 4)), rng.normal(-1.0, 0.5, (1, 2, 40, 4))
    pooled = pool_stats(np.concatenate([utterance_stats_np(a, [40]), utterance_stats_np(b, [40])]))
    frames = np.concatenate([a[0], b[0]], axis=1)
    assert np.allclose(pooled[0], frames.mean(axis=1), atol=1e-4)
    assert np.allclose(pooled[1], frames.var(axis=1), atol=1e-3)
    big = np.full((1, 1, 2, 1), 1e4, np.float32) + np.array([0.0, 2**-6], np.float32)[None, None, :, None]
    assert pool_stats(utterance_stats_np(big, [2]))[1].item() == pytest.approx(2**-14, rel=1e-3)  # no cancellation


def test_group_stats_pool_each_speaker_and_keep_unknown_speakers_alone():
    stats = np.zeros((5, 2, 2, 3), np.float32)
    stats[:, 0] = np.arange(5, dtype=np.float32)[:, None, None]
    stats[:, 1] = 1.0
    grouped = group_stats(stats, ["a", "b", "a", None, ""])
    assert np.allclose(grouped[0, 0], 1.0) and np.allclose(grouped[2, 0], 1.0)  # (0 + 2) / 2
    assert np.allclose(grouped[0, 1], 2.0)  # within-utterance 1 plus between-utterance 1
    assert np.allclose(grouped[1], stats[1])  # b alone
    assert np.allclose(grouped[3], stats[3]) and np.allclose(grouped[4], stats[4])  # unknown: their own
    with pytest.raises(ValueError, match="5 utterances but 2 speakers"):
        group_stats(stats, ["a", "b"])


@pytest.mark.parametrize("mode", ["mean", "mean+std"])
def test_a_speakers_voice_colouring_does_not_change_the_logits(mode):
    """What speaker normalisation is for: a voice's constant shift (and, with mean+std, scale) of
    every state cancels out."""
    head = make_head(mode)
    states, lengths, speakers = speaker_batch()
    text, text_lengths = torch.randn(6, 2, 4, 16), torch.tensor([4, 3, 4, 2, 4, 4])
    voiced = states.clone()
    voiced[3:] = voiced[3:] + torch.randn(1, 3, 1, 24) * 3.0  # speaker b's voice moves all its frames
    if mode == "mean+std":
        voiced[3:] = voiced[3:] * (0.5 + torch.rand(1, 3, 1, 24) * 2)
    with torch.no_grad():
        logits = [head(s, lengths, text, text_lengths, torch.from_numpy(
            group_stats(utterance_stats(s, lengths).numpy(), speakers))) for s in (states, voiced)]
        plain = make_head("none")
        raw = [plain(s, lengths, text, text_lengths) for s in (states, voiced)]
    assert torch.allclose(logits[0], logits[1], atol=1e-3)
    assert not torch.allclose(raw[0][3:], raw[1][3:], atol=1e-2)  # the test can fail: without it the logits move


def test_without_stats_each_utterance_uses_its_own_with_the_prior():
    head = make_head()
    head.speaker_prior.copy_(torch.stack([torch.full((3, 24), 0.5), torch.full((3, 24), 2.0)]))
    states, lengths, _ = speaker_batch()
    text, text_lengths = torch.randn(6, 2, 4, 16), torch.full((6,), 4)
    own_stats = utterance_stats(states, lengths)
    with_prior = pool_with_prior(own_stats, head.speaker_prior)
    expected = np.stack([pool_stats(s[None], head.speaker_prior.numpy()) for s in own_stats.numpy()])
    assert np.allclose(with_prior.numpy(), expected, atol=1e-5)  # the torch and NumPy pools agree
    with torch.no_grad():
        default = head(states, lengths, text, text_lengths)
        own = head(states, lengths, text, text_lengths, with_prior)
        shared = head(states, lengths, text, text_lengths, torch.from_numpy(
            np.repeat(pool_stats(utterance_stats(states, lengths).numpy())[None], 6, axis=0)))
    assert torch.allclose(default, own, atol=1e-5)
    assert not torch.allclose(default, shared, atol=1e-3)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="Unknown speaker_norm 'z'"):
        make_head("z")


def test_prior_counts_as_prior_weight_utterances():
    prior = np.stack([np.zeros((1, 1)), np.ones((1, 1))]).astype(np.float32)
    one = np.stack([np.full((1, 1), 4.0), np.ones((1, 1))]).astype(np.float32)
    pooled = pool_stats(one[None], prior, prior_weight=3.0)
    assert pooled[0].item() == pytest.approx(1.0)  # (3 * 0 + 4) / 4
    assert pooled[1].item() == pytest.approx(1.0 + (3 * 1.0 + 9.0) / 4)  # within plus between
    adapter = SpeakerAdapter(window=5, prior=prior)
    assert np.allclose(adapter.update(one), pooled[None])


def test_speaker_adapter_pools_a_window_and_resets():
    adapter = SpeakerAdapter(window=2)
    one = np.stack([np.full((2, 3), 1.0), np.zeros((2, 3))]).astype(np.float32)
    first = adapter.update(one)
    assert first.shape == (1, 2, 2, 3) and np.allclose(first[0, 0], 1.0) and np.allclose(first[0, 1], 0.0)
    three = one.copy()
    three[0] = 3.0
    assert np.allclose(adapter.update(three[None])[0, 0], 2.0)
    five = one.copy()
    five[0] = 5.0
    pooled = adapter.update(five)
    assert np.allclose(pooled[0, 0], 4.0) and np.allclose(pooled[0, 1], 1.0)  # the first fell out of the window
    assert len(adapter) == 2
    adapter.reset()
    assert len(adapter) == 0
    with pytest.raises(ValueError, match="at least 1"):
        SpeakerAdapter(window=0)
    with pytest.raises(ValueError, match="one utterance at a time"):
        adapter.update(np.zeros((2, 2, 2, 3), np.float32))


# ---------------------------------------------------------------------- training and evaluation


def test_training_feeds_each_speaker_its_offset(tmp_path):
    from tests.test_train import save_tiny_encoders, tiny_config, write_tone_corpus

    from memocmt.trainer.embed_cache import attach_speaker_stats
    from memocmt.model import load_checkpoint
    from memocmt.trainer.train import CachedDataset, collate_cached, train

    audio_dir, text_dir = save_tiny_encoders(tmp_path / "enc")
    tiny = {"audio": str(audio_dir), "text": str(text_dir), "manifest": str(write_tone_corpus(tmp_path / "data"))}
    config = tiny_config(tiny, tmp_path, epochs=2, speaker_subsample=0.5)
    config.model["speaker_norm"] = "mean+std"
    run = train(config, tmp_path / "run", progress=False)
    model = load_checkpoint(run / "best.safetensors")
    assert model.config.speaker_norm == model.speaker_norm == "mean+std"
    prior = model.head.speaker_prior
    assert prior.shape[0] == 2 and not torch.allclose(prior[0], torch.zeros_like(prior[0]))  # set from the training data
    assert (run / "test_metrics.json").is_file()

    from memocmt.trainer.embed_cache import EmbeddedSplit

    states = [torch.randn(2, n, 4) for n in (3, 5, 4)]
    split = EmbeddedSplit(states, [None] * 3, [0, 1, 0], ["x", "y", "z"], [], [("c", "s1"), ("c", "s1"), None])
    attach_speaker_stats([split])
    expected = (states[0].mean(dim=1) + states[1].mean(dim=1)) / 2
    assert torch.allclose(split.speaker_stats[0][0], expected, atol=1e-5)
    assert torch.allclose(split.speaker_stats[1], split.speaker_stats[0])
    assert torch.allclose(split.speaker_stats[2][1], states[2].var(dim=1, unbiased=False), atol=1e-5)
    inputs, _ = collate_cached([CachedDataset(split)[i] for i in range(3)])
    assert inputs[4].shape == (3, 2, 2, 4)
    torch.manual_seed(0)
    subsampled = [CachedDataset(split, speaker_subsample=1.0)[0][3] for _ in range(20)]
    assert any(not torch.allclose(s, split.speaker_stats[0]) for s in subsampled)  # itself alone, sometimes


class _Recorder:
    """A speaker_norm predictor that records the offsets it is given."""

    labels = ["neutral", "angry"]
    speaker_norm = "mean"
    speaker_prior = np.zeros((2, 1, 2), np.float32)

    def __init__(self):
        self.stats = []

    def audio_stats(self, audios):
        return np.stack([np.stack([np.full((1, 2), float(a.size)), np.ones((1, 2))]).astype(np.float32) for a in audios])

    def predict_batch(self, audios, texts, speaker_stats=None):
        from memocmt.results import Prediction

        self.stats.append(speaker_stats)
        return [Prediction.from_probabilities(self.labels, np.array([0.6, 0.4], np.float32)) for _ in audios]


def test_evaluation_pools_each_speakers_utterances(tmp_path):
    import soundfile as sf

    from memocmt.evaluate import evaluate_manifest
    from memocmt.manifest import Manifest, Utterance

    items = []
    for i, (speaker, n) in enumerate([("s1", 1600), ("s1", 3200), ("s2", 4800)]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.zeros(n, np.float32) + 0.01, 16000)
        items.append(Utterance(audio=path, text="", label="neutral", speaker=speaker, split="test"))
    predictor = _Recorder()  # all utterances, but both speakers have too few: pooled with the prior (worth 3)
    evaluate_manifest(predictor, Manifest.from_items(items, ["neutral", "angry"]), batch_size=2, progress=False)
    stats = np.concatenate(predictor.stats)
    assert np.allclose(stats[:, 0, 0, 0], [4800 / 5, 4800 / 5, 4800 / 4])
    from memocmt.evaluate import FEW_SPEAKER_UTTERANCES

    many = []  # a speaker with enough utterances is standardised on them alone
    for i in range(FEW_SPEAKER_UTTERANCES):
        path = tmp_path / f"m{i}.wav"
        sf.write(path, np.zeros(1600 * (i + 1), np.float32) + 0.01, 16000)
        many.append(Utterance(audio=path, text="", label="neutral", speaker="s3", split="test"))
    anonymous = Utterance(audio=items[2].audio, text="", label="neutral", speaker="", split="test")
    predictor = _Recorder()
    evaluate_manifest(predictor, Manifest.from_items(many + [anonymous], ["neutral", "angry"]), progress=False)
    stats = np.concatenate(predictor.stats)[:, 0, 0, 0]
    assert np.allclose(stats[:-1], 1600 * (FEW_SPEAKER_UTTERANCES + 1) / 2) and np.isclose(stats[-1], 4800 / 4)

    predictor = _Recorder()  # K = 1: each utterance with the prior (worth 3 utterances), as live at the start
    evaluate_manifest(predictor, Manifest.from_items(items, ["neutral", "angry"]), progress=False, speaker_utterances=1)
    assert np.allclose(np.concatenate(predictor.stats)[:, 0, 0, 0], [1600 / 4, 3200 / 4, 4800 / 4])
    predictor = _Recorder()  # K = 2: s1's two utterances pool together with the prior; s2 has no other
    evaluate_manifest(predictor, Manifest.from_items(items, ["neutral", "angry"]), progress=False, speaker_utterances=2)
    assert np.allclose(np.concatenate(predictor.stats)[:, 0, 0, 0], [4800 / 5, 4800 / 5, 4800 / 4])


# ---------------------------------------------------------------------- export and runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from tests.tiny_models import build_tiny_model

    from memocmt.onnx.export import export_bundle

    root = tmp_path_factory.mktemp("speaker-norm")
    model = build_tiny_model(root / "models", speaker_norm="mean+std")
    model.head.speaker_prior.copy_(torch.from_numpy(pool_stats(model.audio_stats(_clips(4)))))
    return model, export_bundle(model, root / "bundle")


def _clips(n=3):
    rng = np.random.default_rng(1)
    return [(0.2 * np.sin(np.arange(8000 + 2000 * i) * (0.05 + 0.01 * i)) + 0.01 * rng.standard_normal(8000 + 2000 * i))
            .astype(np.float32) for i in range(n)]


def test_fusion_graph_takes_speaker_stats_and_matches_pytorch(exported):
    from memocmt.runtime import load_bundle

    model, result = exported
    names = [i["name"] for i in result.manifest["graphs"]["fusion"]["inputs"]]
    assert names[-1] == "speaker_stats"
    bundle = load_bundle(result.path, "cpu")
    assert bundle.speaker_norm == "mean+std"
    assert np.allclose(bundle.speaker_prior, model.head.speaker_prior.numpy())
    clips, texts = _clips(), ["i am so angry", "the door is open", "hello"]
    stats = np.repeat(pool_stats(bundle.audio_stats(clips))[None], 3, axis=0)
    assert np.allclose(bundle.audio_stats(clips), model.audio_stats(clips), atol=1e-3)
    for given in (None, stats):
        ours = np.stack([list(p.probabilities.values()) for p in bundle.predict_batch(clips, texts, given)])
        ref = np.stack([list(p.probabilities.values()) for p in model.predict_batch(clips, texts, given)])
        assert np.allclose(ours, ref, atol=1e-3)
    other = stats.copy()
    other[:, 0] += 1.0
    differs = [p.probabilities for p in bundle.predict_batch(clips, texts, other)]
    assert differs != [p.probabilities for p in bundle.predict_batch(clips, texts, stats)]
    with pytest.raises(ValueError, match="statistics for 2 utterances but the batch has 3"):
        bundle.predict_batch(clips, texts, stats[:2])
    with pytest.raises(ValueError, match="must have shape"):
        bundle.predict_batch(clips, texts, stats[:, 0])


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
                               pool_stats(bundle.audio_stats(clips[:2]), bundle.speaker_prior)[None])
    assert np.allclose(list(second.probabilities.values()), list(expected.probabilities.values()), atol=1e-5)


def test_adaptation_benchmark_scores_every_k_over_draws(tmp_path):
    import soundfile as sf

    from benchmarks.studies.adaptation import adaptation_curve, to_markdown
    from memocmt.manifest import Manifest, Utterance

    items = []
    for i in range(6):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.full(1600 * (i + 1), 0.01, np.float32), 16000)
        items.append(Utterance(audio=path, text="", label="neutral", speaker=f"s{i % 2}", split="test"))
    predictor = _Recorder()
    curve = adaptation_curve(predictor, Manifest.from_items(items, ["neutral", "angry"]), ks=(1, 3), draws=2)
    assert set(curve) == {"1", "3", "all"} and len(curve["3"]["ua"]) == 2
    assert len(predictor.stats) == 2 * 2 + 1  # one batch per evaluation (all six fit in 16)
    text = to_markdown({"model": "m", "n": 6, "classes": 2, "draws": 2, "curve": curve, "machine": "here"})
    assert "| 3 |" in text and "| all |" in text


def test_one_encoding_serves_every_k_as_separate_evaluations_would(exported, tmp_path):
    import soundfile as sf

    from memocmt.evaluate import evaluate_manifest, evaluate_speaker_utterances
    from memocmt.manifest import Manifest, Utterance
    from memocmt.runtime import load_bundle

    model, result = exported
    items = []
    for i, clip in enumerate(_clips(6)):
        path = tmp_path / f"{i}.wav"
        sf.write(path, clip, 16000)
        items.append(Utterance(audio=path, text=["i am so angry", "fine", "the door"][i % 3],
                               label=["neutral", "angry"][i % 2], speaker=f"s{i % 2}", split="test"))
    manifest = Manifest.from_items(items, list(model.labels))
    for predictor in (model, load_bundle(result.path, "cpu")):
        separate = {k: evaluate_manifest(predictor, manifest, batch_size=4, progress=False, speaker_utterances=k, seed=3)
                    for k in (0, 1, 2)}
        for keep_bytes in (1 << 30, 0):  # encodings kept between passes, or encoded again for each
            together = evaluate_speaker_utterances(predictor, manifest, (0, 1, 2), batch_size=4, progress=False, seed=3,
                                                   keep_bytes=keep_bytes)
            for k in (0, 1, 2):
                assert together[k].predictions == separate[k].predictions
                assert together[k].report.to_dict() == separate[k].report.to_dict()
                np.testing.assert_array_equal(together[k].probabilities, separate[k].probabilities)
        probs = separate[0].probabilities  # one row per prediction, classes in the report's order
        assert probs.shape == (len(items), len(model.labels))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        labels = separate[0].report.labels
        assert [labels[i] for i in probs.argmax(axis=1)] == [p for _, _, p in separate[0].predictions]
        assert separate[0].report.to_dict() != separate[1].report.to_dict()  # the K really change the statistics


class _Counting:
    """A predictor with separate encode / classify steps that counts its encoder passes."""

    labels = ["neutral", "angry"]
    speaker_prior = np.zeros((2, 1, 2), np.float32)

    def __init__(self, speaker_norm: str):
        self.speaker_norm, self.encoded = speaker_norm, 0

    def encode(self, audios, texts):
        from memocmt.model import Encoding

        self.encoded += len(audios)
        return Encoding(torch.zeros(len(audios), 1, 3, 2), torch.full((len(audios),), 3)), None

    def audio_stats(self, audio):
        return np.zeros((len(audio.lengths), 2, 1, 2), np.float32)

    def classify_batch(self, audio, text, speaker_stats=None):
        from memocmt.results import Prediction

        return [Prediction.from_probabilities(self.labels, np.array([0.6, 0.4], np.float32)) for _ in audio.lengths]


def test_each_utterance_is_encoded_once_unless_the_encodings_do_not_fit(tmp_path):
    import soundfile as sf

    from memocmt.evaluate import evaluate_speaker_utterances
    from memocmt.manifest import Manifest, Utterance

    items = []
    for i in range(5):
        sf.write(tmp_path / f"{i}.wav", np.full(1600, 0.01, np.float32), 16000)
        items.append(Utterance(audio=tmp_path / f"{i}.wav", text="", label="neutral", speaker=f"s{i % 2}", split="test"))
    manifest = Manifest.from_items(items, ["neutral", "angry"])
    plain = _Counting("")
    assert list(evaluate_speaker_utterances(plain, manifest, batch_size=2, progress=False)) == [0]
    assert plain.encoded == 5  # no speaker statistics: one pass
    with pytest.raises(ValueError, match="speaker-normalised"):
        evaluate_speaker_utterances(plain, manifest, (0, 1), progress=False)
    normed = _Counting("mean")
    assert list(evaluate_speaker_utterances(normed, manifest, (0, 1, 3), batch_size=2, progress=False)) == [0, 1, 3]
    assert normed.encoded == 5  # statistics pass kept for all three
    tight = _Counting("mean")
    evaluate_speaker_utterances(tight, manifest, (0, 1, 3), batch_size=2, progress=False, keep_bytes=0)
    assert tight.encoded == 5 * 4  # nothing kept: the statistics pass and one per K
