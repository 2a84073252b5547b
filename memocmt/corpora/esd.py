"""ESD (Emotional Speech Dataset), English speakers 0011-0020.

Layout read: `<spk>/<Emotion>/<spk>_<nnnnnn>.wav` (optionally inside `train/`, `evaluation/`,
`test/` subfolders, as in the original release) and `<spk>/<spk>.txt` with tab-separated
`id<TAB>text<TAB>emotion` lines. Emotions Angry, Happy, Neutral, Sad, Surprise.
`classes="4"` drops Surprise (paper); `"5"` keeps it as "surprised".

Splits:
- `random`: the paper's split, seed 0, stratified by label, 81/9/10; speakers overlap.
- `official`: the corpus's own per speaker and emotion split, 300 train / 20 evaluation (val) /
  30 test. Taken from the `train`/`evaluation`/`test` folder when the files sit in one;
  otherwise from the utterance number: each emotion has a block of 350 numbers per speaker
  (Neutral 1-350, Angry 351-700, Happy 701-1050, Sad 1051-1400, Surprise 1401-1750) and within
  a block numbers 1-20 are evaluation, 21-50 test, 51-350 train. Speakers overlap (same 10).
- `speaker`: seeded speaker-independent split (2 test, 1 val, 7 train speakers).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

from memocmt.corpora.base import CorpusError, check_choice, require_dir
from memocmt.corpora.splits import random_split, speaker_split
from memocmt.manifest import Manifest, Utterance

logger = logging.getLogger("memocmt")

ENGLISH_SPEAKERS = tuple(f"{n:04d}" for n in range(11, 21))
EMOTION_FOLDERS = {"Neutral": "neutral", "Happy": "happy", "Sad": "sad", "Angry": "angry", "Surprise": "surprised"}
CLASSES = {"4": ("neutral", "happy", "sad", "angry"), "5": ("neutral", "happy", "sad", "angry", "surprised")}
SPLITS = ("random", "official", "speaker")
BLOCK = 350  # utterances per speaker and emotion
N_EVAL, N_TEST = 20, 30  # first 20 of a block are evaluation, the next 30 test
SPLIT_FOLDERS = {"train": "train", "evaluation": "val", "test": "test"}

_FILE = re.compile(r"^(\d{4})_(\d{6})$")


def build_esd(
    root: str | os.PathLike,
    *,
    classes: str = "4",
    split: str = "random",
    seed: int = 0,
    speakers: Sequence[str] = ENGLISH_SPEAKERS,
) -> Manifest:
    root = require_dir(root, "ESD")
    classes = check_choice(classes, tuple(CLASSES), "class set", "ESD")
    split = check_choice(split, SPLITS, "split", "ESD")
    found = [root / s for s in speakers if (root / s).is_dir()]
    if not found:
        raise CorpusError(f"No ESD speaker folders ({speakers[0]}..{speakers[-1]}) under {root}.")
    keep = set(CLASSES[classes])
    items = []
    for spk_dir in found:
        texts = _read_transcripts(spk_dir / f"{spk_dir.name}.txt")
        for folder, label in EMOTION_FOLDERS.items():
            if label not in keep or not (spk_dir / folder).is_dir():
                continue
            for audio in sorted((spk_dir / folder).rglob("*.wav")):
                match = _FILE.match(audio.stem)
                if not match:
                    continue
                items.append(Utterance(
                    audio=audio, text=texts.get(audio.stem, ""), label=label, speaker=spk_dir.name,
                    split=official_split(audio), corpus="esd", id=audio.stem,
                    text_source="corpus" if audio.stem in texts else "",
                ))
    if not items:
        raise CorpusError(f"No ESD wav files named like 0011_000001.wav under {root}.")
    if split == "random":
        items = random_split(items, seed=seed)
    elif split == "speaker":
        items = speaker_split(items, seed=seed)
    return Manifest.from_items(items, CLASSES[classes])


def official_split(audio: Path) -> str:
    """ESD's own split of one file: from its train/evaluation/test folder, else its number."""
    if audio.parent.name in SPLIT_FOLDERS:
        return SPLIT_FOLDERS[audio.parent.name]
    offset = (int(audio.stem.split("_")[1]) - 1) % BLOCK
    return "val" if offset < N_EVAL else "test" if offset < N_EVAL + N_TEST else "train"


def _read_transcripts(path: Path) -> dict[str, str]:
    if not path.is_file():
        logger.warning("ESD transcript %s is missing; texts are left empty.", path)
        return {}
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
    else:
        text = raw.decode("utf-8-sig", errors="replace")
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 2 and _FILE.match(parts[0]):
            out[parts[0]] = parts[1].strip()
    return out
