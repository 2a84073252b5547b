"""MELD (Friends TV dialogues): official CSVs plus audio extracted per utterance.

Layout read: `train_sent_emo.csv`, `dev_sent_emo.csv`, `test_sent_emo.csv` (columns Sr No.,
Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, ...) and audio at
`<split>/dia{D}_utt{U}.wav` (or .flac), where <split> is `train`, `dev` or `test` (the release's
`train_splits`, `dev_splits_complete` and `output_repeated_splits_test` folder names also work).
Only the official split is offered: dev is val. Speakers (the characters) recur in every split,
so validate with allow_speaker_overlap=True.

Emotions are renamed to the shared vocabulary (joy -> happy, anger -> angry, sadness -> sad,
surprise -> surprised, fear -> fearful); `classes="7"` keeps all, `"4"` neutral/happy/sad/angry.
Rows whose audio file is absent are left out with one warning per split.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from memocmt.corpora.base import CorpusError, check_choice, require_dir
from memocmt.manifest import FOUR_CLASSES, Manifest, Utterance

logger = logging.getLogger("memocmt")

EMOTIONS = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry",
            "surprise": "surprised", "fear": "fearful", "disgust": "disgust"}
CLASSES = {"7": ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"), "4": FOUR_CLASSES}
SPLITS = ("official",)
CSV_FILES = {"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
AUDIO_DIRS = {
    "train": ("train", "train_splits"),
    "val": ("dev", "dev_splits_complete", "val"),
    "test": ("test", "output_repeated_splits_test"),
}


def build_meld(root: str | os.PathLike, *, classes: str = "7", split: str = "official") -> Manifest:
    root = require_dir(root, "MELD")
    classes = check_choice(classes, tuple(CLASSES), "class set", "MELD")
    check_choice(split, SPLITS, "split", "MELD")
    keep = set(CLASSES[classes])
    items = []
    for split_name, csv_name in CSV_FILES.items():
        csv_path = _find(root, csv_name)
        audio_dir = next((root / d for d in AUDIO_DIRS[split_name] if (root / d).is_dir()), None)
        if audio_dir is None:
            raise CorpusError(f"MELD audio folder for {split_name} not found under {root}; expected one of {AUDIO_DIRS[split_name]}.")
        items.extend(_split_items(csv_path, audio_dir, split_name, keep))
    if not items:
        raise CorpusError(f"No MELD utterances with audio under {root}.")
    return Manifest.from_items(items, CLASSES[classes])


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, *root.glob(f"*/{name}")):
        if candidate.is_file():
            return candidate
    raise CorpusError(f"MELD file {name} not found under {root}.")


def _split_items(csv_path: Path, audio_dir: Path, split: str, keep: set[str]) -> list[Utterance]:
    items, missing = [], 0
    with csv_path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        needed = {"Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"}
        if not needed <= set(reader.fieldnames or ()):
            raise CorpusError(f"{csv_path} lacks column(s) {sorted(needed - set(reader.fieldnames or ()))}.")
        for row in reader:
            label = EMOTIONS.get(row["Emotion"].strip().lower())
            if label is None:
                raise CorpusError(f"{csv_path}: unknown MELD emotion {row['Emotion']!r}.")
            if label not in keep:
                continue
            stem = f"dia{int(row['Dialogue_ID'])}_utt{int(row['Utterance_ID'])}"
            audio = next((audio_dir / (stem + ext) for ext in (".wav", ".flac") if (audio_dir / (stem + ext)).is_file()), None)
            if audio is None:
                missing += 1
                continue
            items.append(Utterance(
                audio=audio, text=row["Utterance"].strip(), label=label, speaker=row["Speaker"].strip(), split=split,
                corpus="meld", session=f"dia{int(row['Dialogue_ID'])}", id=f"{split}-{stem}", text_source="corpus",
            ))
    if missing:
        logger.warning("MELD %s: %d rows have no audio file in %s and were left out.", split, missing, audio_dir)
    return items
