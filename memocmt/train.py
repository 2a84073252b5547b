"""Moved: training to `memocmt.trainer.train`, its command line (`memocmt-train`) to
`memocmt.trainer.cli`; this import path forwards to both for one release, and
`python -m memocmt.train` (also under torchrun) still runs the command."""

from memocmt import _moved
from memocmt.trainer import cli as _cli
from memocmt.trainer import train as _module

__getattr__ = _moved.forward("memocmt.train", _module, _cli)

if __name__ == "__main__":
    raise SystemExit(_cli.cli())
