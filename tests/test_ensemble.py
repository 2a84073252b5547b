"""Late fusion: heads saved on their own, combined into one checkpoint whose probabilities are their product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memocmt.model import CheckpointError, load_checkpoint, save_checkpoint
from memocmt.speaker_norm import pool_stats


def _clips(n=3):
    rng = np.random.default_rng(2)
    return [(0.2 * np.sin(np.arange(7000 + 2500 * i) * (0.04 + 0.01 * i)) + 0.01 * rng.standard_normal(7000 + 2500 * i))
            .astype(np.float32) for i in range(n)]


TEXTS = ["i am so angry", "the door is open", "hello"]


def _probs(predictions):
    return np.stack([list(p.probabilities.values()) for p in predictions])


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """A cross-modal head and an audio-only head over the same tiny encoders, speaker-normalised
    with the same prior (as the recipe trains them), saved as checkpoints."""
    from tests.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("ensemble")
    paths = []
    prior = None
    for modalities in ("both", "audio"):
        model = build_tiny_model(root / "models", modalities=modalities, speaker_norm="mean+std")
        if prior is None:
            prior = torch.from_numpy(pool_stats(model.audio_stats(_clips(4))))
        model.head.speaker_prior.copy_(prior)
        paths.append(save_checkpoint(model, root / f"{modalities}.safetensors"))
    return root, paths


def test_ensemble_multiplies_the_members_probabilities(members):
    from memocmt.ensemble import build_ensemble

    root, paths = members
    ensemble = build_ensemble(paths)
    assert ensemble.config.modalities == "both" and len(ensemble.head.members) == 2
    assert ensemble.speaker_norm == "mean+std"
    clips = _clips()
    stats = np.repeat(pool_stats(ensemble.audio_stats(clips))[None], 3, axis=0)
    for given in (None, stats):  # each utterance with the prior, and a speaker's statistics
        parts = [_probs(load_checkpoint(p).predict_batch(clips, TEXTS, given)) for p in paths]
        product = parts[0] * parts[1]
        product /= product.sum(axis=1, keepdims=True)
        ours = _probs(ensemble.predict_batch(clips, TEXTS, given))
        assert np.allclose(ours, product, atol=1e-5)
        assert not np.allclose(ours, parts[0], atol=1e-3)  # the second head changes the answer


def test_ensemble_checkpoint_round_trip_and_onnx_bundle(members, tmp_path):
    pytest.importorskip("onnxruntime")
    from memocmt.ensemble import build_ensemble
    from memocmt.onnx.export import export_bundle
    from memocmt.runtime import load_bundle

    _, paths = members
    ensemble = build_ensemble(paths)
    saved = save_checkpoint(ensemble, tmp_path / "late.safetensors")
    loaded = load_checkpoint(saved)
    assert loaded.config == ensemble.config
    clips = _clips()
    ref = _probs(ensemble.predict_batch(clips, TEXTS))
    assert np.allclose(_probs(loaded.predict_batch(clips, TEXTS)), ref, atol=1e-6)
    result = export_bundle(loaded, tmp_path / "bundle")
    bundle = load_bundle(result.path, "cpu")
    assert bundle.speaker_norm == "mean+std"
    assert np.allclose(bundle.speaker_prior, ensemble.speaker_prior)
    assert np.allclose(_probs(bundle.predict_batch(clips, TEXTS)), ref, atol=1e-3)


def test_mismatched_members_are_refused_with_a_sentence(members, tmp_path):
    from memocmt.ensemble import build_ensemble

    root, paths = members
    other = load_checkpoint(paths[1])
    other.head.speaker_prior.add_(1.0)
    other_prior = save_checkpoint(other, tmp_path / "other-prior.safetensors")
    with pytest.raises(CheckpointError, match="different speaker priors"):
        build_ensemble([paths[0], other_prior])
    relabelled = load_checkpoint(paths[1])
    relabelled.config.labels = list(reversed(relabelled.config.labels))
    relabelled_path = save_checkpoint(relabelled, tmp_path / "relabelled.safetensors")
    with pytest.raises(CheckpointError, match="ensemble heads trained on the same labels"):
        build_ensemble([paths[0], relabelled_path])
    from tests.tiny_models import build_tiny_model

    plain = save_checkpoint(build_tiny_model(root / "models", modalities="audio"), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="normalise speakers differently"):
        build_ensemble([paths[0], plain])
    nested = save_checkpoint(build_ensemble(paths), tmp_path / "nested.safetensors")
    with pytest.raises(CheckpointError, match="already an ensemble"):
        build_ensemble([nested, paths[1]])
    with pytest.raises(CheckpointError, match="at least two"):
        build_ensemble([paths[0]])


def test_cli_writes_the_ensemble_and_keeps_existing_files(members, tmp_path, capsys):
    from memocmt.ensemble import cli

    _, paths = members
    out = tmp_path / "late.safetensors"
    assert cli([str(p) for p in paths] + ["--out", str(out)]) == 0
    assert "2 heads (both, audio)" in capsys.readouterr().out
    assert load_checkpoint(out).config.members
    before = out.read_bytes()
    with pytest.raises(SystemExit) as stop:
        cli([str(p) for p in paths] + ["--out", str(out)])
    assert stop.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    with pytest.raises(SystemExit):
        cli([str(p) for p in paths] + ["--out", str(paths[0])])
    assert "is one of the members" in capsys.readouterr().err
    assert cli([str(paths[0]), str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("memocmt-ensemble: error:") and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists()
