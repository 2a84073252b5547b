"""Train/val/test assignment: random (stratified by label) or by speaker.

Both are deterministic for a seed and independent of the order items are given in
(items are sorted by id and path before shuffling with numpy's PCG64 generator).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from memocmt.corpora.base import CorpusError
from memocmt.manifest import Utterance

TEST_FRACTION = 0.10  # paper's random split: 10% test, then 10% of the rest as val -> 81/9/10
VAL_FRACTION = 0.10
SPEAKER_TEST_FRACTION = 0.20  # of the speakers, for a seeded speaker-independent split
SPEAKER_VAL_FRACTION = 0.10


def _sorted(items: Iterable[Utterance]) -> list[Utterance]:
    return sorted(items, key=lambda u: (u.id, str(u.audio)))


def random_split(
    items: Iterable[Utterance], *, seed: int = 0, test_fraction: float = TEST_FRACTION, val_fraction: float = VAL_FRACTION
) -> list[Utterance]:
    """The paper's random split, stratified by label.

    Per label: `round(n * test_fraction)` utterances go to test, then `round(rest * val_fraction)`
    of the rest to val, the others to train (81/9/10 with the defaults). Speakers overlap
    between splits, as in the paper.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Utterance]] = defaultdict(list)
    for u in _sorted(items):
        by_label[u.label].append(u)
    out = []
    for label in sorted(by_label):
        group = by_label[label]
        rank = np.argsort(rng.permutation(len(group)))  # each item's position in a shuffled order
        n_test = int(round(len(group) * test_fraction))
        n_val = int(round((len(group) - n_test) * val_fraction))
        for u, r in zip(group, rank):
            split = "test" if r < n_test else "val" if r < n_test + n_val else "train"
            out.append(dataclasses.replace(u, split=split))
    return _sorted(out)


def speaker_split(
    items: Iterable[Utterance],
    *,
    seed: int = 0,
    test_speakers: Sequence[str] | None = None,
    val_speakers: Sequence[str] | None = None,
    test_fraction: float = SPEAKER_TEST_FRACTION,
    val_fraction: float = SPEAKER_VAL_FRACTION,
) -> list[Utterance]:
    """Speaker-independent split: no speaker appears in two splits.

    Explicit `test_speakers` / `val_speakers` are used as given (an empty list means no
    speaker); whatever is left unspecified is drawn at random with the seed, taking
    `round(n_speakers * fraction)` speakers (at least one when there are three or more).
    """
    items = _sorted(items)
    speakers = sorted({u.speaker for u in items})
    for given in (test_speakers or ()), (val_speakers or ()):
        unknown = sorted(set(given) - set(speakers))
        if unknown:
            raise CorpusError(f"Speakers {unknown} are not in the corpus; it has {', '.join(speakers)}.")
    if test_speakers is not None and val_speakers is not None and set(test_speakers) & set(val_speakers):
        raise CorpusError(f"Speakers {sorted(set(test_speakers) & set(val_speakers))} are listed for both test and val.")
    rng = np.random.default_rng(seed)
    pool = [s for s in speakers if s not in set(test_speakers or ()) | set(val_speakers or ())]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    if test_speakers is None:
        test_speakers, pool = pool[: _count(len(speakers), test_fraction)], pool[_count(len(speakers), test_fraction):]
    if val_speakers is None:
        val_speakers, pool = pool[: _count(len(speakers), val_fraction)], pool[_count(len(speakers), val_fraction):]
    split_of = {s: "test" for s in test_speakers} | {s: "val" for s in val_speakers}
    return [dataclasses.replace(u, split=split_of.get(u.speaker, "train")) for u in items]


def _count(n_speakers: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return max(1 if n_speakers >= 3 else 0, int(round(n_speakers * fraction)))


def assign_splits(items: Iterable[Utterance], split_of: dict[str, str]) -> list[Utterance]:
    """Set each utterance's split from its speaker (`split_of[speaker]`, default train)."""
    return [dataclasses.replace(u, split=split_of.get(u.speaker, "train")) for u in _sorted(items)]
