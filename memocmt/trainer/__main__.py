"""`python -m memocmt.trainer` (and `torchrun ... -m memocmt.trainer`): the memocmt-train command."""

import sys

from .cli import cli

sys.exit(cli())
