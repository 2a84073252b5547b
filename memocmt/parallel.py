"""Moved to `memocmt.trainer.parallel` (forked CPU workers); this import path forwards there for one release."""

import sys
import warnings

from memocmt.trainer import parallel as _moved

warnings.warn("memocmt.parallel moved to memocmt.trainer.parallel; the old import path goes in the next release.",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
