"""IEMOCAP: 5 sessions of dyadic conversation, 4-class task (ang, hap+exc, sad, neu).

Layout read: `Session{1..5}/sentences/wav/<dialog>/<utt>.wav`, labels from
`Session*/dialog/EmoEvaluation/*.txt`, transcripts from `Session*/dialog/transcriptions/*.txt`.
Speaker = session + gender of the utterance (Ses01F_impro01_M003 -> "Ses01M").

Splits:
- `random`: the paper's split, seed 0, stratified by label, 81/9/10 (see splits.random_split);
  speakers overlap across splits.
- `loso`: leave-one-session-out, fold k in 1..5. Test = both speakers of session k. Val = one
  speaker of the next session (k mod 5 + 1): the female speaker for odd folds, the male for
  even ones. Train = the other seven speakers. No speaker is in two splits.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from memocmt.corpora.base import CorpusError, check_choice, require_dir
from memocmt.corpora.splits import assign_splits, random_split
from memocmt.manifest import FOUR_CLASSES, Manifest, Utterance

logger = logging.getLogger("memocmt")

N_SESSIONS = 5
LABELS = {"ang": "angry", "hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral"}  # others dropped
SPLITS = ("random", "loso")
CLASSES = ("4",)

_EVAL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t")
_TRANSCRIPT_LINE = re.compile(r"^(Ses\d{2}[FM]_\S+) \[[\d.]+-[\d.]+\]:\s?(.*)$")
_UTT_ID = re.compile(r"^(Ses\d{2})[FM]_.*_([FM])[^_]*$")


def build_iemocap(
    root: str | os.PathLike, *, classes: str = "4", split: str = "random", fold: int = 1, seed: int = 0
) -> Manifest:
    root = require_dir(root, "IEMOCAP")
    check_choice(classes, CLASSES, "class set", "IEMOCAP")
    split = check_choice(split, SPLITS, "split", "IEMOCAP")
    sessions = [root / f"Session{k}" for k in range(1, N_SESSIONS + 1) if (root / f"Session{k}").is_dir()]
    if not sessions:
        raise CorpusError(f"No Session1..Session5 folders under {root}; pass the IEMOCAP_full_release directory.")
    items = []
    for session_dir in sessions:
        items.extend(_session_items(session_dir))
    if not items:
        raise CorpusError(f"No labelled IEMOCAP utterances with audio were found under {root}.")
    if split == "random":
        items = random_split(items, seed=seed)
    else:
        items = assign_splits(items, loso_fold(fold))
    return Manifest.from_items(items, FOUR_CLASSES)


def loso_fold(fold: int) -> dict[str, str]:
    """Speaker -> split for leave-one-session-out fold `fold` (1..5); unlisted speakers train."""
    if not 1 <= int(fold) <= N_SESSIONS:
        raise CorpusError(f"IEMOCAP LOSO fold must be 1..{N_SESSIONS}, not {fold}.")
    fold = int(fold)
    val_session = fold % N_SESSIONS + 1
    val_gender = "F" if fold % 2 == 1 else "M"
    return {f"Ses{fold:02d}F": "test", f"Ses{fold:02d}M": "test", f"Ses{val_session:02d}{val_gender}": "val"}


def _session_items(session_dir: Path) -> list[Utterance]:
    labels = {}
    for path in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
        labels.update(_read_labels(path))
    texts = {}
    for path in sorted((session_dir / "dialog" / "transcriptions").glob("*.txt")):
        texts.update(_read_transcripts(path))
    wav_dir = session_dir / "sentences" / "wav"
    items, missing = [], 0
    for utt_id, code in sorted(labels.items()):
        if code not in LABELS:
            continue
        match = _UTT_ID.match(utt_id)
        if not match:
            logger.warning("Skipping IEMOCAP utterance with an unexpected id: %s", utt_id)
            continue
        dialog = utt_id.rsplit("_", 1)[0]
        audio = wav_dir / dialog / f"{utt_id}.wav"
        if not audio.is_file():
            missing += 1
            continue
        items.append(Utterance(
            audio=audio, text=texts.get(utt_id, ""), label=LABELS[code], speaker=match.group(1) + match.group(2),
            split="train", corpus="iemocap", session=session_dir.name, id=utt_id, text_source="corpus",
        ))
    if missing:
        logger.warning("%s: %d labelled utterances have no wav file and were left out.", session_dir.name, missing)
    return items


def _read_labels(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EVAL_LINE.match(line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def _read_transcripts(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match:
            out[match.group(1)] = match.group(2).strip()
    return out
