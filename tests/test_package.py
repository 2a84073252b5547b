import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_importing_the_package_does_no_heavy_work():
    code = "import sys, memocmt, memocmt.audio, memocmt.features, memocmt.results; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_no_generic_top_level_modules_are_installed():
    import setuptools

    packages = setuptools.find_packages(str(REPO_ROOT), include=["memocmt*"])
    assert packages and all(p == "memocmt" or p.startswith("memocmt.") for p in packages)


def test_moved_modules_forward_from_their_old_import_paths():
    code = """
import importlib, warnings
moved = {"onnx_export": "memocmt.onnx.export", "onnx_verify": "memocmt.onnx.verify",
         "onnx_transforms": "memocmt.onnx.transforms", "train": "memocmt.trainer.train",
         "crossval": "memocmt.trainer.crossval", "embed_cache": "memocmt.trainer.embed_cache",
         "parallel": "memocmt.trainer.parallel"}
for old, new in moved.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module("memocmt." + old)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
    assert all(getattr(module, name) is getattr(importlib.import_module(new), name)
               for name in dir(importlib.import_module(new)) if not name.startswith("__")), old
from memocmt.onnx_export import cli as export_cli
from memocmt.train import cli as train_cli
assert export_cli.__module__ == "memocmt.onnx.cli" and train_cli.__module__ == "memocmt.trainer.cli"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "ok", out.stderr
