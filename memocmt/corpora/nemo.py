"""nEMO, Polish acted emotional speech: `<root>/data.tsv` and `<root>/samples/<file_id>`.

`data.tsv` is tab-separated with a header: `file_id` (the audio file's name in `samples/`),
`emotion`, `raw_text` (orthographic transcript), `normalized_text`, `speaker_id`, `gender`,
`age`. Emotions map onto the 4 classes: neutral -> neutral, happiness -> happy, sadness -> sad,
anger -> angry; the corpus's fear and surprise (absent from some copies) are dropped. Text is
`raw_text` (text_source "corpus"): every sentence is spoken in every emotion, so the words do
not carry it. Speaker = `speaker_id`; language "pl"; gender and age are kept as extra fields.
A `file_id` whose file is missing is looked up with the other audio extensions (a copy
converted from WAV to FLAC keeps working with either table).
Splits: `speaker` (explicit test/val speakers, or a seeded draw of 20%/10% of the 9 actors)
or `random` (stratified 81/9/10, speakers overlap). Licence CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from memocmt.corpora.base import AUDIO_EXTENSIONS, CorpusError, check_choice, require_dir
from memocmt.corpora.splits import random_split, speaker_split
from memocmt.manifest import FOUR_CLASSES, Manifest, Utterance

EMOTIONS = {"neutral": "neutral", "happiness": "happy", "sadness": "sad", "anger": "angry",
            "fear": None, "surprised": None, "surprise": None}
CLASSES = {"4": FOUR_CLASSES}
SPLITS = ("speaker", "random")
LANGUAGE = "pl"
TABLE = "data.tsv"
AUDIO_DIR = "samples"
COLUMNS = ("file_id", "emotion", "raw_text", "speaker_id")


def build_nemo(
    root: str | os.PathLike,
    *,
    classes: str = "4",
    split: str = "speaker",
    seed: int = 0,
    test_speakers: Sequence[str] | None = None,
    val_speakers: Sequence[str] | None = None,
) -> Manifest:
    root = require_dir(root, "nEMO")
    classes = check_choice(classes, tuple(CLASSES), "class set", "nEMO")
    split = check_choice(split, SPLITS, "split", "nEMO")
    table = root / TABLE
    if not table.is_file():
        raise CorpusError(f"No nEMO table {TABLE} in {root}.")
    items = []
    with table.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise CorpusError(f"{table} has no column(s) {', '.join(missing)}; is it nEMO's data.tsv?")
        for lineno, row in enumerate(reader, start=2):
            emotion = row["emotion"].strip().lower()
            if emotion not in EMOTIONS:
                raise CorpusError(f"{table}:{lineno}: unknown emotion {row['emotion']!r}; nEMO has {', '.join(EMOTIONS)}.")
            label = EMOTIONS[emotion]
            if label is None:
                continue
            audio = _audio_path(root / AUDIO_DIR, row["file_id"].strip())
            extra = {k: row[k].strip() for k in ("gender", "age") if row.get(k, "").strip()}
            items.append(Utterance(
                audio=audio, text=row["raw_text"].strip(), label=label, speaker=row["speaker_id"].strip(), split="train",
                corpus="nemo", id=audio.stem, text_source="corpus", language=LANGUAGE, extra=extra,
            ))
    if not items:
        raise CorpusError(f"{table} lists no utterance of the classes {', '.join(CLASSES[classes])}.")
    if split == "random":
        items = random_split(items, seed=seed)
    else:
        items = speaker_split(items, seed=seed, test_speakers=test_speakers, val_speakers=val_speakers)
    return Manifest.from_items(items, CLASSES[classes])


def _audio_path(folder: Path, file_id: str) -> Path:
    """`folder/file_id`, or the same stem with another audio extension when only that one exists."""
    path = folder / file_id
    if path.is_file():
        return path
    for ext in AUDIO_EXTENSIONS:
        other = path.with_suffix(ext)
        if other.is_file():
            return other
    return path  # missing: manifest validation names it
