"""PyTorch-free inference on an exported ONNX bundle.

    from memocmt.runtime import load_bundle
    bundle = load_bundle("memocmt-onnx")            # verifies every file's SHA-256, warms up
    prediction = bundle.predict(audio, "I can't believe you did that")

A bundle is a folder written by `memocmt-export`: up to three graphs (audio encoder, text
encoder, fusion head), the tokenizer and `manifest.json`. Features come from
`memocmt.features` (NumPy), so the runtime feeds the graphs exactly what PyTorch was
compared with at export time. The realtime loop can call `encode_audio` while ASR is
still decoding, then `encode_text` and `classify` once the transcript is known.

This is the runtime's public face: the format lives in `memocmt.bundle_format`, the loaded
bundle in `memocmt.bundle`, and the shipped model's first-use export in `memocmt.bundle_cache`.
This module imports only NumPy, `tokenizers` and (lazily) onnxruntime; never PyTorch.
"""

from __future__ import annotations

from .bundle import WARMUP_AUDIO_S, AudioEncoding, Bundle, TextEncoding, load_bundle, softmax, to_host
from .bundle_format import BUNDLE_FORMAT, BUNDLE_VERSION, GRAPH_FILES, MANIFEST_NAME, SPEAKER_PRIOR_FILE, TOKENIZER_FILE
from .bundle_format import VOICES_FILE, BundleError, graph_interface, read_bundle_manifest, sha256_file, verify_bundle_files
from .bundle_cache import shipped_bundle
from .pretrained import default_bundle_path, memocmt_home, shipped_checkpoint

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "GRAPH_FILES", "MANIFEST_NAME", "SPEAKER_PRIOR_FILE", "TOKENIZER_FILE",
    "VOICES_FILE", "WARMUP_AUDIO_S", "AudioEncoding", "Bundle", "BundleError", "TextEncoding", "default_bundle_path",
    "ensure_default_bundle", "graph_interface", "load_bundle", "memocmt_home", "read_bundle_manifest", "sha256_file",
    "shipped_checkpoint", "softmax", "to_host", "verify_bundle_files",
]


def ensure_default_bundle(providers: str | None = None, threads: int | None = None) -> Bundle:
    """Load the shipped model's bundle, exporting it into the user cache on first use (needs PyTorch)."""
    return load_bundle(shipped_bundle(), providers, threads)
