"""The PyTorch training side: one run (`train`), model selection by speaker cross-validation
(`crossval`), the cache of frozen-encoder embeddings (`embed_cache`), forked CPU workers
(`parallel`) and the `memocmt-train` command (`cli`). Evaluation is memocmt.evaluate; the
recipes that built the shipped model are in training/recipes/."""
