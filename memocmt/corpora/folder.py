"""Any corpus laid out as one folder per label: `<root>/<label>/**/*.(wav|flac|mp3|ogg)`.

The label is the folder name in lower case. The speaker comes from `speaker_pattern`, a regular
expression searched in the file name (group "speaker" if named, else group 1, else the whole
match). Without a pattern each file is its own speaker, which makes a "speaker" split a random
file split; a warning says so. A `<stem>.txt` next to an audio file is used as its transcript.
Splits: `speaker` (seeded 20%/10% of speakers, or explicit lists) or `random` (stratified 81/9/10).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

from memocmt.corpora.base import CorpusError, audio_files, check_choice, require_dir
from memocmt.corpora.splits import random_split, speaker_split
from memocmt.manifest import Manifest, Utterance

logger = logging.getLogger("memocmt")

SPLITS = ("speaker", "random")


def build_folder(
    root: str | os.PathLike,
    *,
    split: str = "speaker",
    seed: int = 0,
    speaker_pattern: str | None = None,
    test_speakers: Sequence[str] | None = None,
    val_speakers: Sequence[str] | None = None,
    corpus: str = "folder",
) -> Manifest:
    root = require_dir(root, "Folder corpus")
    split = check_choice(split, SPLITS, "split", "folder corpus")
    pattern = _compile(speaker_pattern)
    if pattern is None and split == "speaker":
        logger.warning("No speaker pattern given: every file is its own speaker, so the split is not "
                       "speaker-independent; pass speaker_pattern (e.g. r'^(\\d+)_') to fix that.")
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for audio in audio_files(label_dir):
            rel = audio.relative_to(root).with_suffix("").as_posix()
            transcript = audio.with_suffix(".txt")
            text = transcript.read_text(encoding="utf-8", errors="replace").strip() if transcript.is_file() else ""
            items.append(Utterance(
                audio=audio, text=text, label=label_dir.name.lower(), speaker=_speaker(pattern, audio, rel),
                split="train", corpus=corpus, id=rel, text_source="corpus" if transcript.is_file() else "",
            ))
    if not items:
        raise CorpusError(f"No audio files in label folders under {root}; expected <root>/<label>/*.wav.")
    if split == "random":
        items = random_split(items, seed=seed)
    else:
        items = speaker_split(items, seed=seed, test_speakers=test_speakers, val_speakers=val_speakers)
    return Manifest.from_items(items)


def pattern_argv(argv: list[str], flags: tuple[str, ...] = ("--speaker-pattern",)) -> list[str]:
    """`argv` with each `--speaker-pattern REGEX` joined into `--speaker-pattern=REGEX`, so that a regex
    starting with '-' (e.g. '-(\\d+)') is read as the option's value, not as another option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _compile(pattern: str | None) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise CorpusError(f"Speaker pattern {pattern!r} is not a valid regular expression: {e}.") from e


def _speaker(pattern: re.Pattern | None, audio: Path, rel: str) -> str:
    if pattern is None:
        return rel
    match = pattern.search(audio.name)
    if not match:
        raise CorpusError(f"File name {audio.name} does not match the speaker pattern {pattern.pattern!r}.")
    if "speaker" in pattern.groupindex:
        return match.group("speaker")
    return match.group(1) if pattern.groups else match.group(0)
