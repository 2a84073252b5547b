"""The PyTorch side of the ONNX bundle: export (`export`), verification against PyTorch
(`verify`), graph transforms such as int8 quantization (`transforms`) and the `memocmt-export`
command (`cli`). The bundle format is `memocmt.bundle_format`; the PyTorch-free runtime that
serves a bundle is `memocmt.runtime`."""
