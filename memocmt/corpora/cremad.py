"""CREMA-D: `AudioWAV/<speaker>_<sentence>_<emotion>_<intensity>.wav`, 91 actors.

Emotions ANG DIS FEA HAP NEU SAD; `classes="4"` keeps neutral, happy, sad, angry, `"6"` all six.
Text is the sentence the code stands for (text_source "corpus"). Speaker = the 4-digit actor id.
Splits: `speaker` (explicit or seeded 20%/10% of actors) or `random` (stratified 81/9/10).
"""

from __future__ import annotations

import os
import re
from typing import Sequence

from memocmt.corpora.base import CorpusError, audio_files, check_choice, require_dir
from memocmt.corpora.splits import random_split, speaker_split
from memocmt.manifest import FOUR_CLASSES, Manifest, Utterance

EMOTION_CODES = {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry", "FEA": "fearful", "DIS": "disgust"}
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
CLASSES = {"4": FOUR_CLASSES, "6": ("neutral", "happy", "sad", "angry", "fearful", "disgust")}
SPLITS = ("speaker", "random")

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def build_cremad(
    root: str | os.PathLike,
    *,
    classes: str = "4",
    split: str = "speaker",
    seed: int = 0,
    test_speakers: Sequence[str] | None = None,
    val_speakers: Sequence[str] | None = None,
) -> Manifest:
    root = require_dir(root, "CREMA-D")
    classes = check_choice(classes, tuple(CLASSES), "class set", "CREMA-D")
    split = check_choice(split, SPLITS, "split", "CREMA-D")
    audio_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    keep = set(CLASSES[classes])
    items, n_files = [], 0
    for audio in audio_files(audio_dir):
        match = _NAME.match(audio.stem)
        if not match:
            continue
        n_files += 1
        speaker, sentence, emotion, _intensity = match.groups()
        label = EMOTION_CODES.get(emotion)
        if label not in keep:
            continue
        items.append(Utterance(
            audio=audio, text=SENTENCES.get(sentence, ""), label=label, speaker=speaker, split="train",
            corpus="cremad", id=audio.stem, text_source="corpus" if sentence in SENTENCES else "",
        ))
    if not n_files:
        raise CorpusError(f"No CREMA-D files (AudioWAV/1001_DFA_ANG_XX.wav) under {root}.")
    if split == "random":
        items = random_split(items, seed=seed)
    else:
        items = speaker_split(items, seed=seed, test_speakers=test_speakers, val_speakers=val_speakers)
    return Manifest.from_items(items, CLASSES[classes])
