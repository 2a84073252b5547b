"""RAVDESS speech: `Actor_XX/03-01-EE-II-SS-RR-AA.(wav|flac)`.

EE emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
08 surprised), II intensity, SS statement, RR repetition, AA actor. `classes="4"` keeps neutral,
happy, sad, angry (calm is not merged into neutral); `"8"` keeps all. Text is the statement
(SS 01/02), so text_source is "corpus"; the two statements carry no emotion. Language "en".
Speaker = "Actor_XX". Splits: `speaker` (explicit test/val actors, or a seeded draw of 20%/10%
of the actors) or `random` (stratified 81/9/10, speakers overlap). Only speech files
(vocal channel 01) are read.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

from memocmt.corpora.base import CorpusError, check_choice, require_dir
from memocmt.corpora.splits import random_split, speaker_split
from memocmt.manifest import EMOTIONS, FOUR_CLASSES, Manifest, Utterance

EMOTION_CODES = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                 "07": "disgust", "08": "surprised"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
CLASSES = {"4": FOUR_CLASSES, "8": EMOTIONS}
SPLITS = ("speaker", "random")

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


def actor_id(actor: str | int) -> str:
    """`3`, `"03"` or `"Actor_03"` -> `"Actor_03"`."""
    text = str(actor)
    digits = text.removeprefix("Actor_")
    if not digits.isdigit():
        raise CorpusError(f"RAVDESS actor {actor!r} is not a number like 3, 03 or Actor_03.")
    return f"Actor_{int(digits):02d}"


def build_ravdess(
    root: str | os.PathLike,
    *,
    classes: str = "4",
    split: str = "speaker",
    seed: int = 0,
    test_speakers: Sequence[str | int] | None = None,
    val_speakers: Sequence[str | int] | None = None,
) -> Manifest:
    root = require_dir(root, "RAVDESS")
    classes = check_choice(classes, tuple(CLASSES), "class set", "RAVDESS")
    split = check_choice(split, SPLITS, "split", "RAVDESS")
    keep = set(CLASSES[classes])
    items, n_files = [], 0
    for audio in sorted(list(root.glob("Actor_*/*.wav")) + list(root.glob("Actor_*/*.flac"))):
        match = _NAME.match(audio.stem)
        if not match:
            continue
        n_files += 1
        modality, channel, emotion, _intensity, statement, _rep, actor = match.groups()
        if channel != "01" or emotion not in EMOTION_CODES:
            continue
        label = EMOTION_CODES[emotion]
        if label not in keep:
            continue
        items.append(Utterance(
            audio=audio, text=STATEMENTS.get(statement, ""), label=label, speaker=actor_id(actor), split="train",
            corpus="ravdess", id=audio.stem, text_source="corpus", language="en",
        ))
    if not n_files:
        raise CorpusError(f"No RAVDESS files (Actor_XX/03-01-EE-II-SS-RR-AA.wav or .flac) under {root}.")
    if split == "random":
        items = random_split(items, seed=seed)
    else:
        items = speaker_split(
            items, seed=seed,
            test_speakers=None if test_speakers is None else [actor_id(a) for a in test_speakers],
            val_speakers=None if val_speakers is None else [actor_id(a) for a in val_speakers],
        )
    return Manifest.from_items(items, CLASSES[classes])
