"""How far a model's confidence can be trusted, and temperature scaling to mend it (NumPy only).

    report = calibration_report(probabilities, targets)      # ECE, NLL, Brier, reliability bins
    t = fit_temperature(log_probabilities, targets)          # one scalar: softmax(z / t)

A model is calibrated when, of all the utterances it labels with confidence 0.8, 80% are right.
The expected calibration error (ECE) is the gap between confidence and accuracy averaged over
equal-width confidence bins, weighted by how many predictions fall in each; NLL is the mean
negative log-probability of the true class; the Brier score is the mean squared distance between
the probability vector and the one-hot truth (summed over classes).

ECE on a test set of a hundred utterances is itself noisy: a perfectly calibrated model with the
same confidences would still show an ECE well above zero, because each bin's accuracy is measured
on a few utterances. `ece_floor` says how much ("consistency resampling": each prediction is made
right with the probability it claims, many times over): `ece_calibrated` is the mean ECE of such a
model, and `ece_p` the share of its draws at or above the observed ECE (small: really
miscalibrated; near 0.5: indistinguishable from calibrated on this many utterances).

Temperature scaling divides the logits by one number t > 0 fitted to minimise NLL on held-out
predictions: it changes no decision (argmax is unchanged) and only how sure the model says it is.
Fitting uses log-probabilities (any logits work: a constant shift cancels in the softmax), so the
late fusion's summed log-softmaxes are scaled as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .metrics import _json_safe

ECE_BINS = 10
T_RANGE = (0.05, 20.0)  # temperatures searched, wide enough for any trained head


@dataclass
class ReliabilityBin:
    low: float  # confidence range [low, high)
    high: float
    count: int
    confidence: float  # mean confidence of the predictions in the bin (NaN when empty)
    accuracy: float  # share of them that are right (NaN when empty)


@dataclass
class CalibrationReport:
    ece: float  # expected calibration error over ECE_BINS equal-width confidence bins
    nll: float  # mean negative log-probability of the true class (nats)
    brier: float  # mean over utterances of sum over classes of (p - onehot)^2
    mean_confidence: float
    accuracy: float
    bins: list[ReliabilityBin] = field(default_factory=list)
    ece_calibrated: float = float("nan")  # mean ECE a perfectly calibrated model with these confidences shows
    ece_p: float = float("nan")  # share of such a model's draws with an ECE at least the observed one

    def to_dict(self) -> dict:
        out = asdict(self)
        return _json_safe(out)


def _check(probabilities: np.ndarray, targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"Expected (N, classes) probabilities for {len(y)} targets, got shape {p.shape}.")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"Targets must be class ids 0..{p.shape[1] - 1}.")
    return p, y


def calibration_report(probabilities: np.ndarray, targets: Sequence[int], n_bins: int = ECE_BINS) -> CalibrationReport:
    """ECE, NLL, Brier score and the reliability diagram's bins of (N, classes) probabilities."""
    p, y = _check(probabilities, targets)
    if not len(y):
        nan = float("nan")
        return CalibrationReport(nan, nan, nan, nan, nan, [])
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = _bin_of(confidence, n_bins)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        conf = float(confidence[inside].mean()) if count else float("nan")
        acc = float(correct[inside].mean()) if count else float("nan")
        if count:
            ece += count / len(y) * abs(conf - acc)
        bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, conf, acc))
    onehot = np.eye(p.shape[1])[y]
    nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))
    brier = float(np.mean(((p - onehot) ** 2).sum(axis=1)))
    floor = ece_floor(confidence, n_bins)
    return CalibrationReport(float(ece), nll, brier, float(confidence.mean()), float(correct.mean()), bins,
                             float(floor.mean()), float((floor >= ece - 1e-12).mean()))


def _bin_of(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=False), 0, n_bins - 1)


def ece_floor(confidence: np.ndarray, n_bins: int = ECE_BINS, draws: int = 1000, seed: int = 0) -> np.ndarray:
    """ECEs of `draws` test sets where each prediction is right with the probability it claims.

    `confidence` is each prediction's top probability. The spread of the returned values is what
    sampling alone does to the ECE of a perfectly calibrated model on this many utterances."""
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if not len(c):
        return np.full(draws, np.nan)
    in_bin = np.eye(n_bins)[_bin_of(c, n_bins)]  # (N, bins)
    right = (np.random.default_rng(seed).random((draws, len(c))) < c).astype(np.float64)
    gap = right @ in_bin - c @ in_bin  # per draw and bin: (right answers - summed confidence)
    return np.abs(gap).sum(axis=1) / len(c)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll_at(logits: np.ndarray, targets: Sequence[int], temperature: float) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    y = np.asarray(targets, dtype=np.int64)
    return float(-log_p[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, targets: Sequence[int], bounds: tuple[float, float] = T_RANGE) -> float:
    """The temperature t minimising the NLL of softmax(logits / t) (golden-section search on log t;
    the NLL is convex in 1/t, so unimodal on this range)."""
    z, y = _check(logits, targets)
    if len(y) < 2:
        raise ValueError("Fitting a temperature needs at least two held-out predictions.")
    z = np.where(np.isfinite(z), z, np.nanmin(np.where(np.isfinite(z), z, np.nan)) - 50.0)
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll_at(z, y, np.exp(a)), nll_at(z, y, np.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll_at(z, y, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll_at(z, y, np.exp(b))
    return float(np.exp((lo + hi) / 2.0))


def plot_reliability(report: CalibrationReport, path, title: str) -> None:
    """The reliability diagram: accuracy against confidence per bin, with the counts."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    width = report.bins[0].high - report.bins[0].low if report.bins else 0.1
    used = [b for b in report.bins if b.count]
    ax.bar([b.low for b in used], [b.accuracy for b in used], width=width, align="edge", edgecolor="black",
           color="#4c72b0", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="perfectly calibrated")
    for b in used:
        ax.text(b.low + width / 2, min(b.accuracy + 0.02, 0.97), str(b.count), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {report.ece:.3f}, NLL {report.nll:.3f}, Brier {report.brier:.3f}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
