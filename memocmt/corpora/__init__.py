"""Corpus adapters: build a Manifest from each corpus's own on-disk layout.

`CORPORA` maps a name to its adapter; `build_corpus(name, root, **options)` is the one entry
point a CLI or training script needs. Each module's docstring says exactly which files it
reads and how it splits.
"""

from __future__ import annotations

import os

from memocmt.corpora import cremad, esd, folder, iemocap, meld, nemo, ravdess, table
from memocmt.corpora.base import CorpusAdapter, CorpusError
from memocmt.corpora.cremad import build_cremad
from memocmt.corpora.esd import build_esd
from memocmt.corpora.folder import build_folder
from memocmt.corpora.iemocap import build_iemocap
from memocmt.corpora.meld import build_meld
from memocmt.corpora.nemo import build_nemo
from memocmt.corpora.ravdess import build_ravdess
from memocmt.corpora.splits import random_split, speaker_split
from memocmt.corpora.table import build_table
from memocmt.manifest import Manifest

_SPEAKER_LISTS = ("test_speakers", "val_speakers")

CORPORA: dict[str, CorpusAdapter] = {
    "iemocap": CorpusAdapter("iemocap", build_iemocap, "IEMOCAP, 5 sessions, 4 classes (hap+exc merged)",
                             iemocap.CLASSES, iemocap.SPLITS, ("classes", "split", "fold", "seed")),
    "esd": CorpusAdapter("esd", build_esd, "ESD English speakers 0011-0020, 4 or 5 classes",
                         tuple(esd.CLASSES), esd.SPLITS, ("classes", "split", "seed")),
    "ravdess": CorpusAdapter("ravdess", build_ravdess, "RAVDESS speech, Actor_XX folders, 4 or 8 classes",
                             tuple(ravdess.CLASSES), ravdess.SPLITS, ("classes", "split", "seed") + _SPEAKER_LISTS),
    "cremad": CorpusAdapter("cremad", build_cremad, "CREMA-D AudioWAV, 91 actors, 4 or 6 classes",
                            tuple(cremad.CLASSES), cremad.SPLITS, ("classes", "split", "seed") + _SPEAKER_LISTS),
    "meld": CorpusAdapter("meld", build_meld, "MELD CSVs plus extracted audio, official split, 7 or 4 classes",
                          tuple(meld.CLASSES), meld.SPLITS, ("classes", "split")),
    "folder": CorpusAdapter("folder", build_folder, "any <root>/<label>/*.wav tree, speaker from a file-name regex",
                            ("",), folder.SPLITS, ("split", "seed", "speaker_pattern") + _SPEAKER_LISTS),
    "nemo": CorpusAdapter("nemo", build_nemo, "nEMO Polish speech, data.tsv + samples/, 9 actors, 4 classes",
                          tuple(nemo.CLASSES), nemo.SPLITS, ("classes", "split", "seed") + _SPEAKER_LISTS),
    "table": CorpusAdapter("table", build_table, "any CSV/TSV table of audio, label, speaker (text, language) columns",
                           ("",), table.SPLITS, ("split", "seed", "audio_col", "label_col", "speaker_col", "text_col",
                                                 "language", "language_col", "corpus", "label_map", "audio_root",
                                                 "delimiter") + _SPEAKER_LISTS),
}


def build_corpus(name: str, root: str | os.PathLike, **options) -> Manifest:
    """Build the manifest of corpus `name`; options the adapter does not take raise CorpusError."""
    if name not in CORPORA:
        raise CorpusError(f"Unknown corpus {name!r}; choose one of {', '.join(CORPORA)}.")
    adapter = CORPORA[name]
    extra = sorted(set(options) - set(adapter.options))
    if extra:
        raise CorpusError(f"Corpus {name} does not take option(s) {', '.join(extra)}; it takes {', '.join(adapter.options)}.")
    return adapter.build(root, **options)


__all__ = [
    "CORPORA", "CorpusAdapter", "CorpusError", "build_corpus", "build_cremad", "build_esd", "build_folder",
    "build_iemocap", "build_meld", "build_nemo", "build_ravdess", "build_table", "random_split", "speaker_split",
]
