"""Moved to `memocmt.trainer.crossval` (model selection by speaker cross-validation); this import path forwards there for one release."""

import sys
import warnings

from memocmt.trainer import crossval as _moved

warnings.warn("memocmt.crossval moved to memocmt.trainer.crossval; the old import path goes in the next release.",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
