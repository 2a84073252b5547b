"""Moved: the export to `memocmt.onnx.export`, its command line (`memocmt-export`) to
`memocmt.onnx.cli`; this import path forwards to both for one release, and
`python -m memocmt.onnx_export` still runs the command."""

from memocmt import _moved
from memocmt.onnx import cli as _cli
from memocmt.onnx import export as _module

__getattr__ = _moved.forward("memocmt.onnx_export", _module, _cli)

if __name__ == "__main__":
    raise SystemExit(_cli.cli())
