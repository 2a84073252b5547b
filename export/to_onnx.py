"""Export a MemoCMT checkpoint to a verified ONNX bundle (same as the `memocmt-export` command).

    python export/to_onnx.py --checkpoint model.safetensors --out memocmt-onnx --precision int8
"""

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from memocmt.onnx.cli import cli

    raise SystemExit(cli())
