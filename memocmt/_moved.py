"""The old import paths of moved modules, kept for one release: each warns once, then forwards."""

import sys
import warnings
from types import ModuleType


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old import path goes in the next release.", DeprecationWarning,
                  stacklevel=4)


def alias(old: str, module: ModuleType) -> None:
    """Make the module imported as `old` be `module` itself, so that reading or setting a name
    through either path is the same."""
    _warn(old, module.__name__)
    sys.modules[old] = module


def forward(old: str, *modules: ModuleType):
    """A module `__getattr__` for the old path of a module that was split: each name comes from
    the first of `modules` that has it."""
    _warn(old, " and ".join(m.__name__ for m in modules))

    def __getattr__(name: str):
        for module in modules:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__
