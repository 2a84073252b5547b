"""Evaluate a MemoCMT model from a checkout: `python training/evaluate.py --manifest M --json out.json`.

The same as the `memocmt-eval` command; see memocmt/evaluate.py for the options.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing
    from memocmt.evaluate import cli

    sys.exit(cli())
