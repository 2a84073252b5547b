"""Moved: the export to `memocmt.onnx.export`, its command line (`memocmt-export`) to
`memocmt.onnx.cli`; this import path forwards to both for one release."""

import warnings

from memocmt.onnx import cli as _cli
from memocmt.onnx import export as _export

warnings.warn("memocmt.onnx_export moved to memocmt.onnx.export (the command line to memocmt.onnx.cli); "
              "the old import path goes in the next release.", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
    for module in (_export, _cli):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(_cli.cli())
