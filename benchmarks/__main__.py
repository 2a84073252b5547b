"""`python -m benchmarks` from a checkout: see benchmarks/report.py."""

import sys

from benchmarks.report import cli

sys.exit(cli())
