"""MemoCMT Live: multimodal speech emotion recognition with a cross-modal transformer.

Importing this package is cheap and does not import PyTorch: the PyTorch model lives in
`memocmt.model` and the PyTorch-free ONNX runtime in `memocmt.runtime`.
"""

__version__ = "0.1.0"
