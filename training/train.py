"""Train a MemoCMT model from a checkout: `python training/train.py --config training/configs/edge-ravdess.yaml`.

The same as the `memocmt-train` command; see memocmt/trainer/cli.py for the options.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing
    from memocmt.trainer.cli import cli

    sys.exit(cli())
