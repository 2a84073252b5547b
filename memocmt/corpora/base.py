"""What every corpus adapter shares: its error type, audio file types and registry entry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from memocmt.manifest import Manifest

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


class CorpusError(ValueError):
    """A corpus directory that does not have the expected layout; the message says what is missing."""


@dataclass(frozen=True)
class CorpusAdapter:
    """Registry entry: how to build a Manifest from one corpus's own layout."""

    name: str
    build: Callable[..., Manifest]  # build(root, **options) -> Manifest
    description: str
    classes: tuple[str, ...]  # accepted values of the `classes` option, default first ("" = no choice)
    splits: tuple[str, ...]  # accepted values of the `split` option, default first
    options: tuple[str, ...]  # keyword options `build` accepts besides root


def require_dir(root: str | os.PathLike, corpus: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CorpusError(f"{corpus} root {root} is not a directory.")
    return root.resolve()


def check_choice(value: str, choices: tuple[str, ...], what: str, corpus: str) -> str:
    value = str(value)
    if value not in choices:
        raise CorpusError(f"{corpus} has no {what} {value!r}; choose one of {', '.join(choices)}.")
    return value


def audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder` (recursively), sorted so every run sees the same order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
