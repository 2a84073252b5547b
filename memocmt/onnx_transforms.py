"""Moved to `memocmt.onnx.transforms` (ONNX graph transforms); this import path forwards there for one release."""

import sys
import warnings

from memocmt.onnx import transforms as _moved

warnings.warn("memocmt.onnx_transforms moved to memocmt.onnx.transforms; the old import path goes in the next release.",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
