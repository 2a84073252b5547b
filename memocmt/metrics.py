"""Classification metrics for emotion recognition, in NumPy only (no I/O, no plotting).

    report = classification_report(y_true, y_pred, labels, probabilities)
    report.ua, report.wa, report.confusion

UA (unweighted accuracy) is the mean of the per-class recalls over the classes that occur in
`y_true`; WA (weighted accuracy) is plain accuracy. These are the two figures emotion
recognition papers report. ROC curves are one-vs-rest per class from the predicted
probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class RocCurve:
    """One-vs-rest ROC curve of one class."""

    label: str
    fpr: list[float]  # false positive rate at each threshold, ascending
    tpr: list[float]  # true positive rate at each threshold
    thresholds: list[float]  # score thresholds, descending (first one is +inf)
    auc: float  # area under the curve; NaN when the class is absent or is the only one present


@dataclass
class ClassificationReport:
    """Every figure `memocmt-eval` writes, for one set of predictions."""

    labels: list[str]  # class names, in the order of the confusion matrix rows and columns
    n: int  # number of utterances
    ua: float  # unweighted accuracy: mean recall over the classes present in y_true
    wa: float  # weighted accuracy: fraction of utterances predicted correctly
    macro_f1: float  # mean F1 over the classes present in y_true
    weighted_f1: float  # F1 averaged with the classes' support as weights
    recall: dict[str, float]  # per class; NaN for a class with no utterances
    precision: dict[str, float]  # per class; 0 for a class never predicted
    f1: dict[str, float]  # per class
    support: dict[str, int]  # utterances per true class
    confusion: list[list[int]]  # [true][predicted] counts
    roc: dict[str, RocCurve] = field(default_factory=dict)  # per class, when probabilities were given

    @property
    def macro_auc(self) -> float:
        """Mean AUC over the classes whose AUC is defined (NaN when none is)."""
        aucs = [c.auc for c in self.roc.values() if not np.isnan(c.auc)]
        return float(np.mean(aucs)) if aucs else float("nan")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["macro_auc"] = self.macro_auc
        return _json_safe(out)


def _json_safe(obj):
    """NaN and infinity become None so the result is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted class."""
    y_true, y_pred = _as_ids(y_true, n_classes, "y_true"), _as_ids(y_pred, n_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} items but y_pred has {y_pred.size}.")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _as_ids(values: Sequence[int], n_classes: int, name: str) -> np.ndarray:
    ids = np.asarray(values, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= n_classes):
        raise ValueError(f"{name} holds class ids outside 0..{n_classes - 1}.")
    return ids


def unweighted_accuracy(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Mean recall over the classes present in y_true (macro recall, 'UA')."""
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of a binary problem; ties in the scores form one step.

    Thresholds are the distinct scores in descending order, preceded by +inf (nothing
    predicted positive), as in scikit-learn's `roc_curve(drop_intermediate=False)`.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tps = np.cumsum(positive)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    n_pos, n_neg = positive.sum(), (~positive).sum()
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.full(tps.size + 1, np.nan)
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, scores[last_of_tie]]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve (NaN when the curve is undefined)."""
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.trapezoid(tpr, fpr))


def classification_report(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str],
    probabilities: np.ndarray | None = None,
) -> ClassificationReport:
    """All metrics of a set of predictions; `probabilities` (N, classes) adds ROC curves."""
    labels = list(labels)
    k = len(labels)
    matrix = confusion_matrix(y_true, y_pred, k)
    n = int(matrix.sum())
    if n == 0:
        raise ValueError("No predictions to score.")
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    tp = np.diag(matrix).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        denom = precision + np.nan_to_num(recall)
        f1 = np.where(denom > 0, 2 * precision * np.nan_to_num(recall) / denom, 0.0)
    present = support > 0
    report = ClassificationReport(
        labels=labels,
        n=n,
        ua=float(np.mean(recall[present])),
        wa=float(tp.sum() / n),
        macro_f1=float(np.mean(f1[present])),
        weighted_f1=float(np.sum(f1 * support) / n),
        recall={label: float(r) for label, r in zip(labels, recall)},
        precision={label: float(p) for label, p in zip(labels, precision)},
        f1={label: float(f) for label, f in zip(labels, f1)},
        support={label: int(s) for label, s in zip(labels, support)},
        confusion=matrix.tolist(),
    )
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.shape != (n, k):
            raise ValueError(f"probabilities must have shape ({n}, {k}), got {probs.shape}.")
        truth = np.asarray(y_true).reshape(-1)
        for c, label in enumerate(labels):
            fpr, tpr, thresholds = roc_curve(probs[:, c], truth == c)
            report.roc[label] = RocCurve(label, fpr.tolist(), tpr.tolist(), thresholds.tolist(), auc(fpr, tpr))
    return report


def format_confusion(report: ClassificationReport) -> str:
    """The confusion matrix as a text table, rows = true class, columns = predicted class."""
    width = max([len(label) for label in report.labels] + [5])
    header = " " * (width + 1) + " ".join(f"{label:>{width}}" for label in report.labels)
    rows = [
        f"{label:>{width}} " + " ".join(f"{count:>{width}}" for count in row)
        for label, row in zip(report.labels, report.confusion)
    ]
    return "\n".join(["true \\ predicted", header, *rows])


def format_summary(report: ClassificationReport, title: str = "Evaluation") -> str:
    """A short markdown summary: headline figures, per-class table and confusion matrix."""
    lines = [
        f"# {title}",
        "",
        f"{report.n} utterances. UA {report.ua:.2%} · WA {report.wa:.2%} · "
        f"macro F1 {report.macro_f1:.2%} · weighted F1 {report.weighted_f1:.2%}"
        + (f" · macro AUC {report.macro_auc:.3f}" if report.roc else ""),
        "",
        "| class | support | recall | precision | F1 | AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in report.labels:
        roc = report.roc.get(label)
        auc_text = f"{roc.auc:.3f}" if roc is not None and not np.isnan(roc.auc) else "–"
        recall = report.recall[label]
        recall_text = "–" if np.isnan(recall) else f"{recall:.2%}"
        lines.append(
            f"| {label} | {report.support[label]} | {recall_text} | {report.precision[label]:.2%} "
            f"| {report.f1[label]:.2%} | {auc_text} |"
        )
    lines += ["", "```", format_confusion(report), "```", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class UADifference:
    """UA(a) - UA(b) on the same utterances, with a paired bootstrap interval."""

    difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    resampled: str  # "utterances" | "groups" (whole speakers, say) | "utterances within groups"
    units: int  # how many groups (or utterances) there were to resample

    def to_dict(self) -> dict:
        return asdict(self)


# Fewer groups than this make a bootstrap over groups degenerate (two speakers give three distinct
# draws), so utterances are resampled within each group instead.
MIN_BOOTSTRAP_GROUPS = 10


def ua_difference(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int], n_classes: int, *,
                  groups: Sequence | None = None, resamples: int = 2000, confidence: float = 0.95,
                  seed: int = 0) -> UADifference:
    """How much higher system a's UA is than system b's on the same utterances, and how sure that is.

    A paired bootstrap: the utterances (or, with `groups`, whole groups of them such as speakers,
    since one speaker's utterances are not independent) are drawn with replacement `resamples`
    times and both systems are scored on each draw; the interval is the central `confidence`
    share of the differences. An interval that contains 0 does not tell the two apart. With
    fewer than MIN_BOOTSTRAP_GROUPS groups, utterances are resampled within each group: the
    interval then speaks for these speakers only, not for speakers in general.
    """
    y_true, pred_a, pred_b = (_as_ids(v, n_classes, name) for v, name in ((y_true, "y_true"), (pred_a, "pred_a"), (pred_b, "pred_b")))
    if not y_true.size or y_true.shape != pred_a.shape or y_true.shape != pred_b.shape:
        raise ValueError(f"ua_difference needs the same non-empty utterances for both systems "
                         f"(got {y_true.size}, {pred_a.size} and {pred_b.size}).")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("ua_difference needs 0 < confidence < 1 and at least one resample.")
    if groups is None:
        units = [np.array([i]) for i in range(y_true.size)]
    else:
        if len(groups) != y_true.size:
            raise ValueError(f"groups has {len(groups)} entries for {y_true.size} utterances.")
        by_group: dict = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        units = [np.array(rows) for rows in by_group.values()]
    within = groups is not None and len(units) < MIN_BOOTSTRAP_GROUPS
    rng = np.random.default_rng(seed)

    def gap(rows: np.ndarray) -> float:
        y = y_true[rows]
        return unweighted_accuracy(y, pred_a[rows], n_classes) - unweighted_accuracy(y, pred_b[rows], n_classes)

    diffs = np.empty(resamples)
    for r in range(resamples):
        if within:
            rows = np.concatenate([u[rng.integers(0, len(u), len(u))] for u in units])
        else:
            rows = np.concatenate([units[k] for k in rng.integers(0, len(units), len(units))])
        diffs[r] = gap(rows)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    resampled = "utterances" if groups is None else "utterances within groups" if within else "groups"
    return UADifference(gap(np.arange(y_true.size)), float(low), float(high), confidence, resamples, resampled, len(units))
