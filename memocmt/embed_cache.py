"""Moved to `memocmt.trainer.embed_cache` (the cache of frozen-encoder embeddings); this import path forwards there for one release."""

import sys
import warnings

from memocmt.trainer import embed_cache as _moved

warnings.warn("memocmt.embed_cache moved to memocmt.trainer.embed_cache; the old import path goes in the next release.",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
