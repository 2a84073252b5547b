"""The shipped model's ONNX bundle in the user cache, exported there on first use.

`memocmt.runtime.ensure_default_bundle` loads the folder that `shipped_bundle` returns. The
first use runs the exporter (PyTorch side, imported only then); every later one finds the
folder, so the PyTorch-free runtime never needs the exporter once the bundle exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .bundle_format import MANIFEST_NAME
from . import pretrained

logger = logging.getLogger("memocmt")


def shipped_bundle() -> Path:
    """The shipped model's bundle folder in the user cache, exported there on first use.

    The first use needs PyTorch (memocmt-live[torch,models]); every later one only finds the folder."""
    checkpoint = pretrained.shipped_checkpoint()
    path = pretrained.default_bundle_path(checkpoint)
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
