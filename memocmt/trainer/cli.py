"""`memocmt-train`: train the fusion head (or the whole model), resume a run, or fit voice signatures.

    memocmt-train --config training/configs/edge-ravdess.yaml [--set key=value ...] [--cv-folds 4]
    torchrun --nproc_per_node=4 -m memocmt.trainer --config ...

The work is memocmt.trainer.train (one run) and memocmt.trainer.crossval (epoch count and config
chosen by speaker cross-validation, then one run on all train + val speakers).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from .crossval import train_with_cv
from .train import DEVICES, fit_checkpoint_voices, load_config, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memocmt-train", description="Train the MemoCMT fusion head (or the whole model).")
    parser.add_argument("--config", help="YAML training config (see training/configs/).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set lr=3e-4 --set model.d_model=256 (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its state.pt")
    parser.add_argument("--run-dir", help="run folder (default: <out_dir>/<run_name or timestamp>)")
    parser.add_argument("--device", choices=DEVICES, help="override the config's device")
    parser.add_argument("--cv-folds", type=int, metavar="K",
                        help="choose the epoch count (and cv_candidates) by K-fold speaker cross-validation over the "
                             "train + val speakers, then retrain on all of them (default: the config's cv_folds)")
    parser.add_argument("--fit-voices", metavar="CHECKPOINT",
                        help="instead of training: fit the voice signatures for live speaker tracking on the config's "
                             "train + val data and write them into CHECKPOINT (a speaker_norm model trained on that data)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def cli(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.resume and args.cv_folds:
        parser.error("--cv-folds starts a new run; it cannot --resume one.")
    if args.resume and (args.config or args.run_dir):
        parser.error("--resume takes the run folder's own train_config.yaml; do not combine it with --config or --run-dir.")
    if not args.resume and not args.config:
        parser.error("give --config FILE (or --resume RUN_DIR).")
    if args.device:
        args.overrides.append(f"device={args.device}")
    if args.fit_voices and (args.resume or args.cv_folds or args.run_dir):
        parser.error("--fit-voices changes a trained checkpoint; it takes only --config and --set.")
    try:
        if args.fit_voices:
            print(fit_checkpoint_voices(load_config(args.config, args.overrides), args.fit_voices))
            return 0
        if args.resume:
            config = load_config(Path(args.resume) / "train_config.yaml", args.overrides)
            run_dir = train(config, args.resume, resume=True, progress=not args.no_progress)
        else:
            config = load_config(args.config, args.overrides)
            if not config.run_name and not args.run_dir:
                config = dataclasses.replace(config, run_name=f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
            if args.cv_folds is not None:
                config = dataclasses.replace(config, cv_folds=args.cv_folds).validate()
            if config.cv_folds:
                run_dir = train_with_cv(config, args.run_dir, progress=not args.no_progress)
            else:
                run_dir = train(config, args.run_dir, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"memocmt-train: error: {e}", file=sys.stderr)
        return 2
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
