"""Speaker offsets for models trained with `speaker_norm` (NumPy only; the runtime uses it too).

Much of what a frozen speech encoder's states carry is who is speaking. A head trained with
`speaker_norm` sees each utterance's audio states minus its speaker's offset: the mean state
of every encoder layer over that speaker's utterances, computed without labels. What is left
is how this utterance differs from the speaker's usual voice, which is what emotion changes.

Where the offset comes from:
- training and `memocmt-eval`: every utterance of the speaker in the data (the manifest's
  `speaker` field), as speaker-level normalisation is usually evaluated;
- live (`SpeakerAdapter`): the utterances heard so far in the session, up to a window, so the
  first utterances are less accurate than later ones;
- one utterance on its own (`predict` without offsets): its own mean.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable, Sequence

import numpy as np


def utterance_means(states: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(B, L, T, D) states and (B,) valid frames -> (B, L, D) float32 mean over each utterance's frames."""
    states = np.asarray(states, dtype=np.float32)
    t = states.shape[2]
    mask = (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)  # (B, T)
    counts = np.maximum(mask.sum(axis=1), 1.0)[:, None, None]
    return np.einsum("bltd,bt->bld", states, mask) / counts


def group_offsets(means: np.ndarray, speakers: Sequence[Hashable | None]) -> np.ndarray:
    """(N, L, D) utterance means -> (N, L, D) offsets: the mean over all utterances of the same
    speaker; an utterance whose speaker is unknown (None or "") is its own speaker."""
    means = np.asarray(means, dtype=np.float32)
    if len(speakers) != len(means):
        raise ValueError(f"Got {len(means)} utterance means but {len(speakers)} speakers.")
    groups: dict[Hashable, list[int]] = {}
    for i, speaker in enumerate(speakers):
        key = ("utterance", i) if speaker is None or speaker == "" else speaker
        groups.setdefault(key, []).append(i)
    offsets = np.empty_like(means)
    for index in groups.values():
        offsets[index] = means[index].mean(axis=0)
    return offsets


class SpeakerAdapter:
    """The speaker offset of a live session: the mean of the last `window` utterance means.

    `update(means)` adds one utterance (its (L, D) or (1, L, D) mean) and returns the offset to
    classify it with, (1, L, D), which already includes it. A window follows a change of speaker
    within about `window` utterances; `reset()` forgets the session.
    """

    def __init__(self, window: int = 20):
        if window < 1:
            raise ValueError(f"The speaker adaptation window must be at least 1 utterance, not {window}.")
        self.window = window
        self._means: deque[np.ndarray] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._means)

    def update(self, means: np.ndarray) -> np.ndarray:
        means = np.asarray(means, dtype=np.float32)
        if means.ndim == 3:
            if means.shape[0] != 1:
                raise ValueError("SpeakerAdapter.update takes one utterance at a time.")
            means = means[0]
        if self._means and self._means[0].shape != means.shape:
            raise ValueError(f"Utterance means of shape {means.shape} do not match the session's {self._means[0].shape}.")
        self._means.append(means)
        return np.mean(np.stack(self._means), axis=0)[None]

    def reset(self) -> None:
        self._means.clear()
