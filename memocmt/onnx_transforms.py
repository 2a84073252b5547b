"""Moved to `memocmt.onnx.transforms` (ONNX graph transforms); this import path forwards there for one release."""

from memocmt import _moved
from memocmt.onnx import transforms as _module

_moved.alias(__name__, _module)
