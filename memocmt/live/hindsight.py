"""Hindsight: a voice's first utterances classified again once the voice is well known.

A speaker-normalised model classifies each utterance against the statistics of its voice so far.
The first utterances of a voice are classified from a few of them pooled with the prior, and they
are the least accurate of a session (benchmarks/results/live_accuracy). `Hindsight` keeps what the
fusion head needs for each of a voice's first `window - 1` utterances (their encoder states, in
float16, and their text states) and hands them back once the voice has been heard `window` times,
or when the session ends; the emotion model then classifies them again with the voice's statistics
of that moment. What was shown at the time is not rewritten: each new answer is a `Revision` of
it, which the view, the JSONL and the session summary report.

Memory is bounded: at most `max_kept` utterances are held (Whisper tiny.en's states for 3 s of
speech take about 0.6 MB in float16, Whisper base's about 1 MB); when more arrive, the oldest is given up
unrevised.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from memocmt.results import Prediction

MAX_KEPT = 64  # utterances held for revision across all voices


@dataclass
class Revision:
    """A later answer for an utterance shown earlier, from its voice's fuller statistics."""

    index: int  # the utterance's index (UtteranceResult.index)
    prediction: Prediction  # the new answer
    previous: Prediction  # what was shown at the time

    @property
    def changed(self) -> bool:
        return self.prediction.label != self.previous.label

    def to_dict(self) -> dict:
        p = self.prediction
        return {
            "type": "revision",
            "index": self.index,
            "label": p.label,
            "confidence": round(p.confidence, 4),
            "probabilities": {k: round(v, 4) for k, v in p.probabilities.items()},
            "speaker": p.speaker,
            "previous_label": self.previous.label,
            "previous_confidence": round(self.previous.confidence, 4),
        }


@dataclass
class Kept:
    """One utterance held for revision: its encodings on the host and what was shown."""

    index: int
    audio: Any  # the bundle's AudioEncoding with float16 host states
    text: Any  # the bundle's TextEncoding (host states) or None
    language: str | None
    prediction: Prediction


class Hindsight:
    """Holds each voice's first `window - 1` utterances until the voice has been heard `window` times."""

    def __init__(self, window: int, max_kept: int = MAX_KEPT):
        if window < 1 or max_kept < 0:
            raise ValueError(f"Hindsight needs a window of at least 1 and max_kept >= 0, not {window} and {max_kept}.")
        self.window, self.max_kept = window, max_kept
        self._kept: OrderedDict[int, tuple[Hashable, Kept]] = OrderedDict()  # by index, oldest first
        self._heard: dict[Hashable, int] = {}  # voice -> utterances committed
        self.given_up = 0  # utterances dropped unrevised because too many were held

    def __len__(self) -> int:
        return len(self._kept)

    def heard(self, voice: Hashable, item: Kept) -> list[Kept]:
        """`voice` said `item` (committed): hold it while the voice is young, and return the voice's held
        utterances once it has been heard `window` times (to classify again now)."""
        count = self._heard[voice] = self._heard.get(voice, 0) + 1
        self.keep(voice, count, item)
        return self.due(voice, count)

    def keep(self, voice: Hashable, heard: int, item: Kept) -> None:
        """`item` was the `heard`-th utterance of `voice`: held while the voice's window is not yet full."""
        if heard >= self.window or self.max_kept == 0:
            return
        self._kept[item.index] = (voice, item)
        while len(self._kept) > self.max_kept:
            self._kept.popitem(last=False)
            self.given_up += 1

    def due(self, voice: Hashable, heard: int) -> list[Kept]:
        """The utterances of `voice` to classify again now that it has been heard `heard` times."""
        if heard < self.window:
            return []
        return self._pop(lambda v: v == voice)

    def remaining(self) -> dict[Hashable, list[Kept]]:
        """Everything still held, by voice (the session ends)."""
        out: dict[Hashable, list[Kept]] = {}
        for voice, item in self._kept.values():
            out.setdefault(voice, []).append(item)
        self._kept.clear()
        return out

    def _pop(self, which) -> list[Kept]:
        picked = [i for i, (v, _) in self._kept.items() if which(v)]
        return [self._kept.pop(i)[1] for i in picked]


def host_copy(encoding: Any, to_host, dtype=np.float16) -> Any:
    """The encoding with its states on the host (float16 by default: what `Kept` holds for audio)."""
    return type(encoding)(np.asarray(to_host(encoding.states), dtype=dtype), np.asarray(encoding.lengths).copy())


def as_float32(encoding: Any) -> Any:
    return type(encoding)(np.asarray(encoding.states, dtype=np.float32), encoding.lengths)
