"""Calibration figures and temperature scaling (memocmt.calibration), and temperatures inside the heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memocmt.calibration import calibration_report, ece_floor, fit_temperature, nll_at, softmax


def test_ece_nll_and_brier_of_known_predictions():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    targets = [0, 1, 0, 1]
    report = calibration_report(probs, targets)
    # bins: 0.9 (two predictions, one right), 0.6 (right), 0.8 (right)
    assert report.ece == pytest.approx((2 * abs(0.9 - 0.5) + abs(0.6 - 1) + abs(0.8 - 1)) / 4)
    assert report.nll == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.6, 0.8])))
    assert report.brier == pytest.approx(np.mean([2 * 0.01, 2 * 0.81, 2 * 0.16, 2 * 0.04]))
    assert sum(b.count for b in report.bins) == 4 and report.accuracy == 0.75
    assert calibration_report(np.eye(3), [0, 1, 2]).ece == 0.0
    with pytest.raises(ValueError, match="class ids"):
        calibration_report(probs, [0, 1, 2, 0])


def test_ece_floor_is_what_sampling_alone_gives_a_calibrated_model():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5000, 4)) * 3.0
    probs = softmax(logits)
    truth = np.array([rng.choice(4, p=p) for p in probs])  # calibrated by construction
    confidence = probs.max(1)
    small, large = ece_floor(confidence[:100]).mean(), ece_floor(confidence).mean()
    assert 0.04 < small < 0.15 and large < small / 4  # shrinks as 1 / sqrt(N)
    calibrated = calibration_report(probs[:100], truth[:100])
    assert calibrated.ece_calibrated == pytest.approx(small)
    assert calibrated.ece_p > 0.05  # indistinguishable from calibrated on 100 utterances
    sharpened = calibration_report(softmax(logits[:100], 0.3), truth[:100])  # overconfident
    assert sharpened.ece > sharpened.ece_calibrated and sharpened.ece_p < 0.01
    assert np.isnan(ece_floor(np.array([]))).all()


def test_fitted_temperature_recovers_the_one_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 4)) * 4.0
    true_t = 2.5  # labels drawn from softmax(logits / 2.5): the raw logits are overconfident
    probs = softmax(logits, true_t)
    targets = np.array([rng.choice(4, p=p) for p in probs])
    t = fit_temperature(logits, targets)
    assert t == pytest.approx(true_t, rel=0.1)
    assert nll_at(logits, targets, t) < nll_at(logits, targets, 1.0)
    assert calibration_report(softmax(logits, t), targets).ece < calibration_report(softmax(logits), targets).ece
    assert np.array_equal(softmax(logits, t).argmax(1), logits.argmax(1))  # no decision changes
    with pytest.raises(ValueError, match="two"):
        fit_temperature(logits[:1], targets[:1])


def test_heads_divide_their_logits_by_their_temperature():
    from memocmt.fusion import EnsembleHead, FusionHead

    torch.manual_seed(0)
    kw = dict(audio_dim=8, text_dim=8, audio_layers=2, text_layers=2, d_model=8, n_heads=2, n_classes=3)
    audio, lengths = torch.randn(2, 2, 5, 8), torch.tensor([5, 3])
    text, tlen = torch.randn(2, 2, 4, 8), torch.tensor([4, 2])
    plain = FusionHead(**kw).eval()
    warm = FusionHead(**kw, temperature=2.0).eval()
    warm.load_state_dict(plain.state_dict())
    assert torch.allclose(warm(audio, lengths, text, tlen), plain(audio, lengths, text, tlen) / 2.0)
    a, b = FusionHead(**kw, temperature=2.0).eval(), FusionHead(**kw, modalities="audio", temperature=0.5).eval()
    ensemble = EnsembleHead([a, b], temperature=1.5).eval()
    expected = (torch.log_softmax(a(audio, lengths, text, tlen), -1) + torch.log_softmax(b(audio, lengths, None, None), -1)) / 1.5
    assert torch.allclose(ensemble(audio, lengths, text, tlen), expected, atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        FusionHead(**kw, temperature=0.0)


def test_ensemble_temperature_from_member_log_probabilities():
    from memocmt.ensemble import ensemble_logprobs, fit_ensemble_temperature

    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(500, 3)) * 3, rng.normal(size=(500, 3)) * 3
    targets = rng.integers(0, 3, 500)
    combined = ensemble_logprobs([z1, z2], [2.0, 1.0])
    assert np.allclose(combined, np.log(softmax(z1, 2.0)) + np.log(softmax(z2)))
    t = fit_ensemble_temperature([z1, z2], [2.0, 1.0], targets)
    assert t == pytest.approx(fit_temperature(combined, targets))


def test_checkpoint_config_update_keeps_the_weights(tmp_path, tiny_dirs):
    from memocmt.config import MemoCMTConfig
    from memocmt.model import MemoCMT, read_checkpoint, save_checkpoint, update_checkpoint_config

    model = MemoCMT(MemoCMTConfig(audio_encoder=str(tiny_dirs["hubert"]), text_encoder=str(tiny_dirs["bert"]),
                                  d_model=16, n_heads=2, labels=["a", "b"]))
    path = save_checkpoint(model, tmp_path / "m.safetensors", extra={"epoch": 3})
    before = read_checkpoint(path)[1]
    config = update_checkpoint_config(path, extra={"calibration": {"temperature": 1.7}}, temperature=1.7)
    after_config, after, extra = read_checkpoint(path)
    assert config.temperature == after_config.temperature == 1.7
    assert extra == {"epoch": 3, "calibration": {"temperature": 1.7}}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="positive"):
        update_checkpoint_config(path, temperature=-1.0)
    assert read_checkpoint(path)[0].temperature == 1.7  # a refused change leaves the file as it was
