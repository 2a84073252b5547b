"""Moved to `memocmt.onnx.verify` (verification of an export against PyTorch); this import path forwards there for one release."""

from memocmt import _moved
from memocmt.onnx import verify as _module

_moved.alias(__name__, _module)
