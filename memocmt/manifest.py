"""The utterance manifest every training and evaluation tool reads.

A manifest is a JSON Lines file, one object per utterance:

    {"id": "Ses01F_impro01_F000", "audio": "Session1/sentences/wav/...wav", "text": "Excuse me.",
     "label": "neutral", "speaker": "Ses01F", "split": "train", "corpus": "iemocap",
     "session": "Session1", "text_source": "corpus"}

Required fields: `audio` (a relative path resolves against the manifest file's directory),
`text` (may be ""), `label`, `speaker`, `split` ("train" | "val" | "test"). Optional: `id`
(unique when given), `corpus`, `session`, `text_source` ("corpus" | "asr" | "synthetic"),
`language` (the spoken language's code, e.g. "en", "pl"; "" or absent when unknown).
Any other keys are kept in `Utterance.extra` and written back unchanged.

The class order (`Manifest.labels`, index = class id) is not stored in the file: it is
`EMOTIONS` order for the emotions listed there, then the others alphabetically. Pass an
explicit order to `validate_manifest` or `map_labels` when a model needs a different one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal, Mapping, Sequence

from memocmt.audio import AudioError, check_audio, load_audio

logger = logging.getLogger("memocmt")

SPLITS = ("train", "val", "test")
TEXT_SOURCES = ("corpus", "asr", "synthetic")
REQUIRED_FIELDS = ("audio", "text", "label", "speaker", "split")
OPTIONAL_FIELDS = ("id", "corpus", "session", "text_source", "language")

# Canonical emotion names shared by every corpus adapter, in class-id order.
EMOTIONS = ("neutral", "happy", "sad", "angry", "calm", "fearful", "disgust", "surprised")
FOUR_CLASSES = ("neutral", "happy", "sad", "angry")  # the IEMOCAP-style 4-class task
# Cross-corpus reduction to the 4 classes: the other emotions are dropped, never merged.
TO_FOUR_CLASSES: dict[str, str | None] = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "calm": None,
    "fearful": None,
    "disgust": None,
    "surprised": None,
}

MAX_PROBLEMS_IN_MESSAGE = 5


class ManifestError(ValueError):
    """A manifest that cannot be read or used; the message names the file and row."""


@dataclass(frozen=True)
class Utterance:
    """One labelled recording."""

    audio: Path  # absolute once read from a manifest; adapters also give absolute paths
    text: str  # transcript, "" when there is none
    label: str  # emotion class name
    speaker: str  # speaker (or voice) id, unique within its corpus
    split: str  # "train" | "val" | "test"
    corpus: str = ""
    session: str = ""
    id: str = ""
    text_source: str = ""  # "corpus" | "asr" | "synthetic" | "" (unknown)
    language: str = ""  # spoken language code ("en", "pl", ...), "" when unknown
    extra: dict = field(default_factory=dict, hash=False)  # unknown keys, kept verbatim
    line: int = field(default=0, compare=False)  # 1-based line in the source file, 0 if built in memory

    def speaker_key(self) -> tuple[str, str]:
        """Speaker identity across corpora: the same id in two corpora is two people."""
        return (self.corpus, self.speaker)


@dataclass(frozen=True)
class Manifest:
    """Utterances plus the class order that turns labels into class ids."""

    items: tuple[Utterance, ...]
    labels: tuple[str, ...]  # class id = position in this tuple
    source: Path | None = field(default=None, compare=False)  # file it was read from

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(set(self.labels)) != len(self.labels):
            raise ManifestError(f"Label list {list(self.labels)} contains duplicates.")
        unknown = sorted({u.label for u in self.items} - set(self.labels))
        if unknown:
            raise ManifestError(f"Labels {unknown} are used by utterances but missing from the label list {list(self.labels)}.")

    @classmethod
    def from_items(cls, items: Iterable[Utterance], labels: Sequence[str] | None = None, source: Path | None = None) -> "Manifest":
        items = tuple(items)
        return cls(items, tuple(labels) if labels is not None else infer_labels(items), source)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.items)

    def split(self, name: str) -> "Manifest":
        """The utterances of one split, with the same class order."""
        if name not in SPLITS:
            raise ManifestError(f"Unknown split {name!r}; choose one of {', '.join(SPLITS)}.")
        return Manifest(tuple(u for u in self.items if u.split == name), self.labels, self.source)

    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def targets(self) -> list[int]:
        """Class id of every utterance, in item order."""
        index = self.label_to_id()
        return [index[u.label] for u in self.items]

    def speakers(self) -> set[tuple[str, str]]:
        return {u.speaker_key() for u in self.items}

    def counts(self) -> dict[str, Counter]:
        """Utterances per label for each split present."""
        out: dict[str, Counter] = {}
        for u in self.items:
            out.setdefault(u.split, Counter())[u.label] += 1
        return out

    def summary(self) -> str:
        """A small text table: one row per split, one column per label."""
        counts = self.counts()
        width = max([len(label) for label in self.labels] + [5])
        lines = ["split  " + " ".join(f"{label:>{width}}" for label in self.labels) + f" {'total':>{width}}"]
        for split in SPLITS:
            if split in counts:
                row = " ".join(f"{counts[split][label]:>{width}}" for label in self.labels)
                lines.append(f"{split:<6} {row} {sum(counts[split].values()):>{width}}")
        return "\n".join(lines)


def infer_labels(items: Iterable[Utterance]) -> tuple[str, ...]:
    """Class order for a set of utterances: EMOTIONS order first, then other labels alphabetically."""
    present = {u.label for u in items}
    known = [e for e in EMOTIONS if e in present]
    return tuple(known + sorted(present - set(known)))


def map_labels(manifest: Manifest, mapping: Mapping[str, str | None], *, labels: Sequence[str] | None = None) -> Manifest:
    """Rename or drop classes: `mapping[old] = new`, or None to drop every `old` utterance.

    Every label used by the manifest must be a key of `mapping`; an unmapped label raises
    instead of slipping through. The new class order is `labels`, or the mapping's target
    values in the order they first appear.
    """
    used = {u.label for u in manifest.items}
    unknown = sorted(used - set(mapping))
    if unknown:
        raise ManifestError(
            f"Labels {unknown} have no entry in the label mapping; map each one to a class or to None to drop it."
        )
    items = [dataclasses.replace(u, label=mapping[u.label]) for u in manifest.items if mapping[u.label] is not None]
    if labels is None:
        labels = tuple(dict.fromkeys(v for v in mapping.values() if v is not None))
    return Manifest.from_items(items, labels, manifest.source)


def merge_manifests(manifests: Sequence[Manifest], names: Sequence[str] | None = None) -> Manifest:
    """One manifest holding the utterances of several (one corpus each, or already merged ones).

    Every utterance keeps its corpus, language and speaker; one with no corpus field takes the
    stem of the manifest file it came from (else `names[i]`), so that speakers of
    two corpora never merge. Refused with one ManifestError: manifests whose class sets differ
    (map them onto one set first) and an utterance id used by two manifests.
    """
    if not manifests:
        raise ManifestError("There are no manifests to merge.")
    names = list(names) if names is not None else [m.source.stem if m.source else f"manifest{i + 1}" for i, m in enumerate(manifests)]
    first = manifests[0]
    items: list[Utterance] = []
    owner: dict[str, int] = {}  # utterance id -> index of the manifest that holds it
    for index, (manifest, name) in enumerate(zip(manifests, names)):
        if set(manifest.labels) != set(first.labels):
            raise ManifestError(
                f"{name} has classes {sorted(manifest.labels)} but {names[0]} has {sorted(first.labels)}; "
                "map both onto one class set before merging."
            )
        for u in manifest.items:
            if u.id and owner.setdefault(u.id, index) != index:
                raise ManifestError(f"Utterance id {u.id!r} is in both {names[owner[u.id]]} and {name}; "
                                    "ids must be unique across merged manifests.")
            items.append(u if u.corpus else dataclasses.replace(u, corpus=manifest.source.stem if manifest.source else name))
    return Manifest.from_items(items, first.labels)


# ----------------------------------------------------------------------------- reading / writing


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Parse a JSONL manifest; a malformed line raises ManifestError naming `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}")
    base = path.resolve().parent
    items = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: invalid JSON ({e.msg} at column {e.colno}).") from e
            items.append(_utterance_from_json(obj, base, where, lineno))
    return Manifest.from_items(items, source=path)


def _utterance_from_json(obj: object, base: Path, where: str, lineno: int) -> Utterance:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing required field(s) {', '.join(missing)}.")
    for key in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        if key in obj and not isinstance(obj[key], str):
            raise ManifestError(f"{where}: field {key!r} must be a string, got {json.dumps(obj[key])}.")
    if obj["split"] not in SPLITS:
        raise ManifestError(f"{where}: split {obj['split']!r} is not one of {', '.join(SPLITS)}.")
    source = obj.get("text_source", "")
    if source and source not in TEXT_SOURCES:
        raise ManifestError(f"{where}: text_source {source!r} is not one of {', '.join(TEXT_SOURCES)}.")
    for key in ("audio", "label", "speaker"):
        if not obj[key]:
            raise ManifestError(f"{where}: field {key!r} is empty.")
    audio = Path(obj["audio"])
    extra = {k: v for k, v in obj.items() if k not in REQUIRED_FIELDS + OPTIONAL_FIELDS}
    return Utterance(
        audio=audio if audio.is_absolute() else Path(os.path.normpath(base / audio)),
        text=obj["text"],
        label=obj["label"],
        speaker=obj["speaker"],
        split=obj["split"],
        corpus=obj.get("corpus", ""),
        session=obj.get("session", ""),
        id=obj.get("id", ""),
        text_source=source,
        language=obj.get("language", ""),
        extra=extra,
        line=lineno,
    )


def utterance_to_json(u: Utterance, base: Path | None = None) -> dict:
    """The JSON object for one utterance.

    With `base`, the audio path is written relative to it when the two share a directory below
    the filesystem root (a corpus next to the project stays portable), else absolute.
    """
    audio = Path(u.audio).absolute()
    audio_str = str(audio)
    if base is not None:
        try:
            common = Path(os.path.commonpath([audio, base]))
        except ValueError:  # another drive on Windows
            common = None
        if common is not None and common.parent != common:  # share more than the filesystem root
            audio_str = os.path.relpath(audio, base)
    obj: dict = {}
    if u.id:
        obj["id"] = u.id
    obj.update(audio=Path(audio_str).as_posix(), text=u.text, label=u.label, speaker=u.speaker, split=u.split)
    for key in ("corpus", "session", "text_source", "language"):
        if getattr(u, key):
            obj[key] = getattr(u, key)
    obj.update(u.extra)
    return obj


def write_manifest(path: str | os.PathLike, manifest: Manifest, *, relative: bool = True) -> Path:
    """Write a JSONL manifest atomically; audio paths are relative to its directory (see
    utterance_to_json) unless `relative=False`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent if relative else None
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for u in manifest.items:
            f.write(json.dumps(utterance_to_json(u, base), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest. Row-level problems can be skipped; others cannot."""

    row: int  # 1-based line (or item) number; 0 for a problem of the whole manifest
    path: str  # the audio file concerned, "" for a problem of the whole manifest
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}: " if self.row else ""
        return f"{where}{self.path + ': ' if self.path else ''}{self.reason}"


@dataclass(frozen=True)
class ValidationResult:
    manifest: Manifest  # the utterances kept, with the checked class order
    problems: tuple[Problem, ...]  # every row that was skipped, with why

    @property
    def skipped(self) -> int:
        return len(self.problems)


def validate_manifest(
    manifest: Manifest,
    *,
    labels: Sequence[str] | None = None,
    check_files: bool = True,
    decode: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
    allow_speaker_overlap: bool = False,
    required_splits: Sequence[str] = SPLITS,
) -> ValidationResult:
    """Check a manifest before any work starts.

    Row problems: a missing or unreadable audio file (the header is read; `decode=True` decodes
    and checks the whole signal), a label not in `labels`, a duplicate id. With
    `on_error="raise"` any of them raises one ManifestError listing the first few; with "skip"
    those rows are dropped and listed in the result.

    Manifest problems always raise, since dropping rows cannot fix them: a split in
    `required_splits` that is empty (after skipping), and a speaker in both train and test
    unless `allow_speaker_overlap=True` (the paper's random splits do overlap speakers).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}.")
    labels = tuple(labels) if labels is not None else manifest.labels
    name = str(manifest.source) if manifest.source else "manifest"
    problems: list[Problem] = []
    kept: list[Utterance] = []
    seen_ids: dict[str, int] = {}
    for index, u in enumerate(manifest.items, start=1):
        row = u.line or index
        reason = _row_problem(u, labels, seen_ids, row, check_files, decode)
        if u.id and u.id not in seen_ids:
            seen_ids[u.id] = row
        if reason:
            problems.append(Problem(row, str(u.audio), reason))
        else:
            kept.append(u)
    if problems and on_error == "raise":
        shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS_IN_MESSAGE])
        more = f" (and {len(problems) - MAX_PROBLEMS_IN_MESSAGE} more)" if len(problems) > MAX_PROBLEMS_IN_MESSAGE else ""
        raise ManifestError(f"{name} has {len(problems)} bad row(s): {shown}{more}; fix them or skip them with on_error='skip'.")
    if problems:
        logger.warning("Skipped %d of %d rows of %s: %s", len(problems), len(manifest), name,
                       "; ".join(str(p) for p in problems[:MAX_PROBLEMS_IN_MESSAGE]))
    result = Manifest.from_items(kept, labels, manifest.source)
    _check_whole(result, name, required_splits, allow_speaker_overlap)
    return ValidationResult(result, tuple(problems))


def _row_problem(u: Utterance, labels: Sequence[str], seen_ids: dict[str, int], row: int, check_files: bool, decode: bool) -> str:
    if u.label not in labels:
        return f"label {u.label!r} is not one of {list(labels)}"
    if u.id and u.id in seen_ids:
        return f"id {u.id!r} already used on row {seen_ids[u.id]}"
    if check_files:
        return _audio_problem(Path(u.audio), decode)
    return ""


def _audio_problem(path: Path, decode: bool) -> str:
    if not path.is_file():
        return "audio file not found"
    if not os.access(path, os.R_OK):
        return "audio file is not readable (permissions)"
    if not decode:
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except RuntimeError:  # soundfile's LibsndfileError
            pass  # not a format libsndfile knows (mp3 on old builds, m4a): decode it instead
        else:
            return "" if info.frames > 0 else "audio file has no samples"
    try:
        check_audio(load_audio(path), name=path.name)
    except AudioError as e:
        return str(e)
    return ""


def _check_whole(manifest: Manifest, name: str, required_splits: Sequence[str], allow_speaker_overlap: bool) -> None:
    counts = Counter(u.split for u in manifest.items)
    empty = [s for s in required_splits if counts[s] == 0]
    if empty:
        raise ManifestError(f"{name} has no utterances in split(s) {', '.join(empty)}.")
    if allow_speaker_overlap:
        return
    shared = manifest.split("train").speakers() & manifest.split("test").speakers()
    if shared:
        shown = ", ".join(f"{c}/{s}" if c else s for c, s in sorted(shared)[:MAX_PROBLEMS_IN_MESSAGE])
        raise ManifestError(
            f"{name} has {len(shared)} speaker(s) in both train and test ({shown}); use a speaker-independent "
            "split, or pass allow_speaker_overlap=True for a random split as in the paper."
        )
