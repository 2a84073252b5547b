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
