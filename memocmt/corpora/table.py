"""A user's own corpus described by one CSV or TSV table, one row per utterance.

Columns are named by the caller: the audio file (relative paths resolve against `audio_root`,
default the table's folder), the label, the speaker, and optionally the transcript and the
language. Labels are lower-cased; `label_map` renames them ("happiness=happy,fear=": an empty
target drops the class). One `language` code applies to every row unless `language_col` gives
it per row. The delimiter is a tab for `.tsv`/`.tab` files and a comma otherwise, unless given.
Splits: `speaker` (seeded 20%/10% of the speakers, or explicit lists) or `random` (stratified
81/9/10, speakers overlap). Rows whose audio is missing are left to manifest validation, which
names them (and skips them with --skip-bad).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from memocmt.corpora.base import CorpusError, check_choice
from memocmt.corpora.splits import random_split, speaker_split
from memocmt.manifest import Manifest, Utterance

SPLITS = ("speaker", "random")


def parse_label_map(text: str | None) -> dict[str, str | None]:
    """`"happiness=happy,fear="` -> {"happiness": "happy", "fear": None}."""
    mapping: dict[str, str | None] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        old, sep, new = pair.partition("=")
        if not sep or not old.strip():
            raise CorpusError(f"Label map entry {pair!r} is not old=new (or old= to drop the class).")
        mapping[old.strip().lower()] = new.strip().lower() or None
    return mapping


def build_table(
    path: str | os.PathLike,
    *,
    audio_col: str = "audio",
    label_col: str = "label",
    speaker_col: str = "speaker",
    text_col: str = "",
    language: str = "",
    language_col: str = "",
    corpus: str = "",
    label_map: str | dict | None = None,
    audio_root: str | os.PathLike | None = None,
    delimiter: str = "",
    split: str = "speaker",
    seed: int = 0,
    test_speakers: Sequence[str] | None = None,
    val_speakers: Sequence[str] | None = None,
) -> Manifest:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(f"Corpus table {path} is not a file.")
    split = check_choice(split, SPLITS, "split", "table corpus")
    if language and language_col:
        raise CorpusError("Give the language either for every row (language) or per row (language_col), not both.")
    mapping = label_map if isinstance(label_map, dict) else parse_label_map(label_map)
    root = Path(audio_root).expanduser().resolve() if audio_root else path.resolve().parent
    corpus = corpus or path.stem
    delimiter = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    items = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        wanted = [c for c in (audio_col, label_col, speaker_col, text_col, language_col) if c]
        missing = [c for c in wanted if c not in (reader.fieldnames or ())]
        if missing:
            raise CorpusError(f"{path} has no column(s) {', '.join(missing)}; its columns are {', '.join(reader.fieldnames or ())}.")
        for lineno, row in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            audio_text, label, speaker = (row[c].strip() if row[c] else "" for c in (audio_col, label_col, speaker_col))
            if not audio_text or not label or not speaker:
                raise CorpusError(f"{where}: the audio, label and speaker cells must not be empty.")
            label = label.lower()
            if label in mapping:
                label = mapping[label]
                if label is None:
                    continue
            audio = Path(audio_text).expanduser()
            audio = audio if audio.is_absolute() else root / audio
            items.append(Utterance(
                audio=audio, text=(row[text_col] or "").strip() if text_col else "", label=label, speaker=speaker,
                split="train", corpus=corpus, id=f"{corpus}/{Path(audio_text).with_suffix('').as_posix()}",
                text_source="corpus" if text_col else "",
                language=(row[language_col] or "").strip().lower() if language_col else language.lower(),
            ))
    if not items:
        raise CorpusError(f"{path} has no utterances (after the label map).")
    if split == "random":
        items = random_split(items, seed=seed)
    else:
        items = speaker_split(items, seed=seed, test_speakers=test_speakers, val_speakers=val_speakers)
    return Manifest.from_items(items)
