"""Moved to `memocmt.trainer.crossval` (model selection by speaker cross-validation); this import path forwards there for one release."""

from memocmt import _moved
from memocmt.trainer import crossval as _module

_moved.alias(__name__, _module)
