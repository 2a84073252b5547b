"""Run the live pipeline from a checkout: `python realtime/live.py --help`.

Installed copies have the `memocmt-live` command instead; both call memocmt.live.cli.cli.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
    from memocmt.live.cli import cli

    sys.exit(cli())
