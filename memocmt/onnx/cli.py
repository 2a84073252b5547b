"""`memocmt-export`: export a MemoCMT model to a verified ONNX bundle.

    memocmt-export --checkpoint model.safetensors --out memocmt-onnx --precision int8

Without --checkpoint it exports the shipped model into the user cache, where
`memocmt.runtime.ensure_default_bundle` finds it. The work is `memocmt.onnx.export`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..bundle_format import ExportError, sha256_file
from ..encoders import EncoderLoadError
from ..model import CheckpointError, MemoCMT, load_checkpoint
from ..pretrained import default_bundle_path, shipped_checkpoint
from .export import DEFAULT_OPSET, OPSETS, PRECISIONS, export_bundle

logger = logging.getLogger("memocmt")


def _default_verify_audio() -> Path | None:
    """Real speech for verification when this checkout sits next to the shared data folder."""
    candidate = Path(__file__).resolve().parents[3] / "shared" / "data" / "ravdess-a01-a20"
    return candidate if candidate.is_dir() else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memocmt-export",
        description="Export a MemoCMT model to a verified ONNX bundle for the PyTorch-free runtime.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="trained safetensors checkpoint (default: the shipped model)")
    source.add_argument("--preset", choices=("edge", "paper"),
                        help="export an UNTRAINED preset model (for benchmarks and tests only)")
    parser.add_argument("--out", type=Path, help="bundle folder (default: the user cache for the shipped model, "
                        "else ./memocmt-onnx-<name>-<precision>)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (exact), int8 (dynamic MatMul quantization, CPU) or fp16 (CUDA)")
    parser.add_argument("--int8-graphs", metavar="LIST",
                        help="with int8: comma-separated graphs to quantize, the rest stay fp32 (e.g. text,fusion "
                             "when the audio encoder's int8 error moves predictions; default: all)")
    parser.add_argument("--optimize", action="store_true", help="apply ONNX Runtime graph fusions offline")
    parser.add_argument("--opset", type=int, choices=OPSETS, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--verify-audio", type=Path, help="folder of speech files to verify with "
                        "(default: a RAVDESS sample folder beside the checkout when present, else generated audio)")
    parser.add_argument("--eval-manifest", type=Path, help="JSONL manifest whose test utterances must agree with "
                        "PyTorch on >= 99%% of predictions (fp16/int8); with int8 its val/train utterances also "
                        "calibrate it, keeping the MatMuls that move the logits most in fp32")
    parser.add_argument("--eval-limit", type=int, help="use at most this many utterances of --eval-manifest")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def cli(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return _run_cli(parser, args)
    except (ExportError, CheckpointError, EncoderLoadError, FileNotFoundError) as e:
        print(f"memocmt-export: error: {e}", file=sys.stderr)
        return 1


def _run_cli(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    int8_graphs = None
    if args.int8_graphs is not None:
        int8_graphs = tuple(g.strip() for g in args.int8_graphs.split(",") if g.strip())
        if args.precision != "int8":
            parser.error("--int8-graphs needs --precision int8.")
        unknown = sorted(set(int8_graphs) - {"audio", "text", "fusion"})
        if unknown or not int8_graphs:
            parser.error(f"--int8-graphs takes some of audio, text, fusion, not {args.int8_graphs!r}.")

    if args.preset:
        logger.warning("Exporting the UNTRAINED %s preset: its predictions are meaningless.", args.preset)
        model, source = MemoCMT.from_preset(args.preset), {"preset": args.preset}
        out = args.out or Path(f"memocmt-onnx-{args.preset}-untrained-{args.precision}")
    else:
        checkpoint = args.checkpoint or shipped_checkpoint()
        if checkpoint is None:
            parser.error("no trained checkpoint ships with this install; pass --checkpoint PATH "
                         "(or --preset edge to export an untrained model for testing)")
        model = load_checkpoint(checkpoint)
        source = {"checkpoint": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}
        default_out = default_bundle_path(checkpoint) if args.checkpoint is None and args.precision == "fp32" else \
            Path(f"memocmt-onnx-{Path(checkpoint).stem}-{args.precision}")
        out = args.out or default_out
    result = export_bundle(
        model, out, precision=args.precision, optimize=args.optimize, opset=args.opset, source=source,
        verify_audio=args.verify_audio or _default_verify_audio(), eval_manifest=args.eval_manifest,
        eval_limit=args.eval_limit, int8_graphs=int8_graphs,
    )
    parity = result.manifest["parity"]
    print(json.dumps({"bundle": str(result.path), "precision": args.precision, "parity": parity}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
