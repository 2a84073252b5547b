"""Moved to `memocmt.trainer.embed_cache` (the cache of frozen-encoder embeddings); this import path forwards there for one release."""

from memocmt import _moved
from memocmt.trainer import embed_cache as _module

_moved.alias(__name__, _module)
