"""Moved: training to `memocmt.trainer.train`, its command line (`memocmt-train`) to
`memocmt.trainer.cli`; this import path forwards to both for one release, and
`python -m memocmt.train` (or `torchrun ... -m memocmt.train`) still runs the command."""

import warnings

from memocmt.trainer import cli as _cli
from memocmt.trainer import train as _train

warnings.warn("memocmt.train moved to memocmt.trainer.train (the command line to memocmt.trainer.cli); "
              "the old import path goes in the next release.", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
    for module in (_train, _cli):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(_cli.cli())
