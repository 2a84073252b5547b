"""Moved to `memocmt.onnx.verify` (verification of an export against PyTorch); this import path forwards there for one release."""

import sys
import warnings

from memocmt.onnx import verify as _moved

warnings.warn("memocmt.onnx_verify moved to memocmt.onnx.verify; the old import path goes in the next release.",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
