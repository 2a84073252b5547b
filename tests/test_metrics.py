"""Metrics against hand-computed examples and scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from memocmt.metrics import (
    auc,
    classification_report,
    confusion_matrix,
    format_confusion,
    format_summary,
    roc_curve,
    unweighted_accuracy,
)

LABELS = ["neutral", "happy", "sad", "angry"]


def test_hand_computed_example():
    # true:  n n n n h h s s s a ; pred: n n n h h n s s a a
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 2, 3, 3]
    r = classification_report(y_true, y_pred, LABELS)
    assert r.confusion == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 1], [0, 0, 0, 1]]
    # recalls 3/4, 1/2, 2/3, 1/1 -> UA = (0.75 + 0.5 + 0.6667 + 1) / 4
    assert r.ua == pytest.approx((0.75 + 0.5 + 2 / 3 + 1.0) / 4)
    assert r.wa == pytest.approx(7 / 10)
    assert r.recall["happy"] == pytest.approx(0.5)
    assert r.precision["angry"] == pytest.approx(0.5)
    assert r.f1["angry"] == pytest.approx(2 / 3)
    assert r.support == {"neutral": 4, "happy": 2, "sad": 3, "angry": 1}


def test_absent_class_is_left_out_of_ua():
    r = classification_report([0, 0, 1], [0, 2, 1], ["a", "b", "c"])
    assert math.isnan(r.recall["c"])
    assert r.ua == pytest.approx((0.5 + 1.0) / 2)
    assert unweighted_accuracy([0, 0, 1], [0, 2, 1], 3) == pytest.approx(0.75)
    json.dumps(r.to_dict(), allow_nan=False)  # NaN becomes null


def test_matches_sklearn_on_random_predictions():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y_true]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y_pred = probs.argmax(1)
    r = classification_report(y_true, y_pred, LABELS, probs)
    assert r.ua == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert r.wa == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert r.macro_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert r.weighted_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    np.testing.assert_array_equal(np.array(r.confusion), skm.confusion_matrix(y_true, y_pred))
    for c, label in enumerate(LABELS):
        fpr, tpr, thr = skm.roc_curve(y_true == c, probs[:, c], drop_intermediate=False)
        np.testing.assert_allclose(r.roc[label].fpr, fpr)
        np.testing.assert_allclose(r.roc[label].tpr, tpr)
        assert r.roc[label].auc == pytest.approx(skm.roc_auc_score(y_true == c, probs[:, c]))
    assert r.macro_auc == pytest.approx(skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))


def test_roc_with_ties_and_perfect_scores():
    fpr, tpr, thr = roc_curve(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 0, 1, 0]))
    assert fpr.tolist() == [0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0]
    assert auc(fpr, tpr) == pytest.approx(0.5)
    fpr, tpr, _ = roc_curve(np.array([0.8, 0.7, 0.2]), np.array([1, 1, 0]))
    assert auc(fpr, tpr) == pytest.approx(1.0)
    fpr, tpr, _ = roc_curve(np.array([0.8, 0.7]), np.array([1, 1]))
    assert math.isnan(auc(fpr, tpr))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 5], [0, 1], 4)
    with pytest.raises(ValueError, match="items"):
        confusion_matrix([0, 1], [0], 4)
    with pytest.raises(ValueError, match="No predictions"):
        classification_report([], [], LABELS)
    with pytest.raises(ValueError, match="shape"):
        classification_report([0, 1], [0, 1], LABELS, np.zeros((2, 3)))


def test_text_outputs():
    r = classification_report([0, 1, 2, 3], [0, 1, 2, 2], LABELS, np.eye(4))
    table = format_confusion(r)
    assert "angry" in table and table.splitlines()[-1].split()[-2:] == ["1", "0"]
    summary = format_summary(r, "RAVDESS test")
    assert summary.startswith("# RAVDESS test") and "UA 75.00%" in summary


def test_ua_difference_is_the_paired_difference_with_a_bootstrap_interval():
    from memocmt.metrics import ua_difference, unweighted_accuracy

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    good = np.where(rng.random(400) < 0.9, y, (y + 1) % 4)
    poor = np.where(rng.random(400) < 0.5, y, (y + 1) % 4)
    d = ua_difference(y, good, poor, 4)
    assert d.difference == pytest.approx(unweighted_accuracy(y, good, 4) - unweighted_accuracy(y, poor, 4))
    assert 0 < d.low < d.difference < d.high and d.resampled == "utterances"
    same = ua_difference(y, good, good, 4)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    assert ua_difference(y, good, poor, 4, seed=1).difference == d.difference


def test_ua_difference_resamples_whole_speakers():
    """A system better on one speaker of ten only: utterance resampling calls it better, speaker resampling cannot tell."""
    from memocmt.metrics import ua_difference

    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(10), 40)
    y = np.tile(np.arange(4), 100)
    shared = np.where(rng.random(400) < 0.8, y, (y + 1) % 4)
    a, b = shared.copy(), shared.copy()
    a[speakers == 0], b[speakers == 0] = y[speakers == 0], (y[speakers == 0] + 1) % 4
    by_utterance = ua_difference(y, a, b, 4)
    by_speaker = ua_difference(y, a, b, 4, groups=speakers.tolist())
    assert by_utterance.difference == by_speaker.difference == pytest.approx(0.1)
    assert by_utterance.low > 0.05 and by_speaker.low <= 0.0 < by_speaker.high and by_speaker.resampled == "groups"


def test_ua_difference_with_few_speakers_resamples_within_each():
    """Two speakers would give a bootstrap over speakers three distinct draws; utterances are drawn within each."""
    from memocmt.metrics import ua_difference

    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4), 40)
    a = np.where(rng.random(160) < 0.8, y, (y + 1) % 4)
    b = np.where(rng.random(160) < 0.7, y, (y + 1) % 4)
    d = ua_difference(y, a, b, 4, groups=["s1"] * 80 + ["s2"] * 80)
    assert d.resampled == "utterances within groups" and d.units == 2
    assert d.low < d.difference < d.high and d.high - d.low > 0.05
    assert ua_difference(y, a, b, 4, groups=[f"s{i % 10}" for i in range(160)]).resampled == "groups"


def test_ua_difference_refuses_mismatched_inputs():
    from memocmt.metrics import ua_difference

    with pytest.raises(ValueError, match="same non-empty utterances"):
        ua_difference([0, 1], [0, 1], [0], 2)
    with pytest.raises(ValueError, match="groups has 1 entries"):
        ua_difference([0, 1], [0, 1], [1, 0], 2, groups=["s"])
    with pytest.raises(ValueError, match="confidence"):
        ua_difference([0, 1], [0, 1], [1, 0], 2, confidence=1.5)
