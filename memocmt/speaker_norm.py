"""Speaker statistics for models trained with `speaker_norm` (NumPy only; the runtime uses it too).

Much of what a frozen speech encoder's states carry is who is speaking. A head trained with
`speaker_norm: mean` sees each utterance's audio states minus its speaker's mean state (per
layer and dimension); with `mean+std` they are also divided by the speaker's standard
deviation. What is left is how this utterance differs from the speaker's usual voice, which is
what emotion changes. Labels are never used.

Speaker statistics are an array (2, L, D): the mean and the variance of the speaker's frames.
Each utterance contributes its own (mean, variance) over its frames; a speaker's statistics pool
those with equal weight per utterance (mean of means; mean of variances plus the variance of the
means), which stays exact in float32 where E[x^2] - E[x]^2 would cancel.

Where the statistics come from:
- training and `memocmt-eval`: every utterance of the speaker in the data (the manifest's
  `speaker` field), as speaker-level normalisation is usually evaluated;
- live (`SpeakerAdapter`): the utterances heard so far in the session, up to a window;
- one utterance on its own (`predict` without statistics): its own.

A speaker heard only a few times is poorly described by those utterances alone (one utterance
standardised by its own statistics loses what its average voice says), so outside the
all-utterances case the statistics also pool the model's prior, the statistics of all its
training utterances, with the weight of PRIOR_WEIGHT utterances. Training shows the head such
few-utterance statistics too (`speaker_subsample`).
"""

from __future__ import annotations

from collections import deque
from typing import Hashable, Sequence

import numpy as np

SPEAKER_NORMS = ("none", "mean", "mean+std")
PRIOR_WEIGHT = 3.0  # the prior counts as this many utterances when a speaker's statistics are pooled
ADAPT_WINDOW = 20  # utterances a live session pools; training subsamples up to this many


def utterance_stats(states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(B, L, T, D) states and (B,) valid frames -> (B, 2, L, D) float32 mean and variance over each utterance's frames."""
    states = np.asarray(states, dtype=np.float32)
    mask = (np.arange(states.shape[2])[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)  # (B, T)
    counts = np.maximum(mask.sum(axis=1), 1.0)[:, None, None]
    mean = np.einsum("bltd,bt->bld", states, mask) / counts
    var = np.einsum("bltd,bt->bld", (states - mean[:, :, None]) ** 2, mask) / counts
    return np.stack([mean, var], axis=1)


def pool_stats(stats: np.ndarray, prior: np.ndarray | None = None, prior_weight: float = PRIOR_WEIGHT) -> np.ndarray:
    """(N, 2, L, D) statistics of N utterances -> (2, L, D) statistics of all their frames, each
    utterance weighted equally; a (2, L, D) `prior` joins them with the weight of `prior_weight` utterances."""
    stats = np.asarray(stats, dtype=np.float32)
    weights = np.ones(len(stats), dtype=np.float32)
    if prior is not None:
        stats = np.concatenate([np.asarray(prior, dtype=np.float32)[None], stats])
        weights = np.concatenate([[np.float32(prior_weight)], weights])
    w = (weights / weights.sum())[:, None, None]
    means = stats[:, 0]
    mean = (w * means).sum(axis=0)
    var = (w * (stats[:, 1] + (means - mean) ** 2)).sum(axis=0)
    return np.stack([mean, var])


def group_stats(stats: np.ndarray, speakers: Sequence[Hashable | None]) -> np.ndarray:
    """(N, 2, L, D) utterance statistics -> (N, 2, L, D) statistics of each utterance's speaker,
    pooled over all of that speaker's utterances; an unknown speaker (None or "") is its own."""
    stats = np.asarray(stats, dtype=np.float32)
    if len(speakers) != len(stats):
        raise ValueError(f"Got statistics of {len(stats)} utterances but {len(speakers)} speakers.")
    groups: dict[Hashable, list[int]] = {}
    for i, speaker in enumerate(speakers):
        groups.setdefault(("utterance", i) if speaker is None or speaker == "" else speaker, []).append(i)
    out = np.empty_like(stats)
    for index in groups.values():
        out[index] = pool_stats(stats[index])
    return out


class SpeakerAdapter:
    """Speaker statistics of a live session: those of the last `window` utterances, pooled with
    the model's `prior` (when it has one).

    `update(stats)` adds one utterance's (2, L, D) or (1, 2, L, D) statistics and returns the
    statistics to classify it with, (1, 2, L, D), which already include it. A window follows a
    change of speaker within about `window` utterances; `reset()` forgets the session.
    """

    def __init__(self, window: int = ADAPT_WINDOW, prior: np.ndarray | None = None):
        if window < 1:
            raise ValueError(f"The speaker adaptation window must be at least 1 utterance, not {window}.")
        self.window = window
        self.prior = prior
        self._stats: deque[np.ndarray] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._stats)

    def update(self, stats: np.ndarray, commit: bool = True) -> np.ndarray:
        """Add one utterance's statistics and return those to classify it with; with `commit=False`
        only return them (an utterance that may still change, e.g. a tentative live segment)."""
        stats = np.asarray(stats, dtype=np.float32)
        if stats.ndim == 4:
            if stats.shape[0] != 1:
                raise ValueError("SpeakerAdapter.update takes one utterance at a time.")
            stats = stats[0]
        if self._stats and self._stats[0].shape != stats.shape:
            raise ValueError(f"Utterance statistics of shape {stats.shape} do not match the session's {self._stats[0].shape}.")
        if not commit:
            window = [*self._stats, stats][-self.window:]
            return pool_stats(np.stack(window), self.prior)[None]
        self._stats.append(stats)
        return pool_stats(np.stack(self._stats), self.prior)[None]

    def statistics(self) -> np.ndarray:
        """(1, 2, L, D) statistics of the window as it is (the prior alone while it is empty)."""
        if not self._stats:
            if self.prior is None:
                raise ValueError("An empty window without a prior has no statistics.")
            return np.asarray(self.prior, dtype=np.float32)[None]
        return pool_stats(np.stack(self._stats), self.prior)[None]

    def reset(self) -> None:
        self._stats.clear()
