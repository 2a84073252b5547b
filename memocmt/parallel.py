"""Moved to `memocmt.trainer.parallel` (forked CPU workers); this import path forwards there for one release."""

from memocmt import _moved
from memocmt.trainer import parallel as _module

_moved.alias(__name__, _module)
