"""MemoCMT Live: multimodal speech emotion recognition with a cross-modal transformer.

Importing this package is cheap and does not import PyTorch: the PyTorch model lives in
`memocmt.model`, its training in `memocmt.trainer` and its export in `memocmt.onnx`; the
PyTorch-free ONNX runtime is `memocmt.runtime` (the bundle format both sides share is
`memocmt.bundle_format`) and the realtime pipeline `memocmt.live`.
"""

__version__ = "0.1.0"
