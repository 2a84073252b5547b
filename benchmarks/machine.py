"""What a benchmark ran on: CPU, cores, memory, GPU, OS, library versions and load.

Results carry this record so numbers from different machines are never compared by accident.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("numpy", "torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxruntime-gpu", "ctranslate2",
            "faster-whisper", "webrtcvad-wheels", "silero-vad", "opensmile", "scikit-learn")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU features that int8 and fp32 matrix kernels depend on: ONNX Runtime's int8 MatMul runs several times
# faster with AVX-512 VNNI (or AVX-VNNI) than with AVX2 alone, so int8 speed-ups differ between x86 hosts.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_flags(flags=ISA_FLAGS, cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of `flags` the CPU reports, in their order (empty where `cpuinfo` cannot be read)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in flags if f in have]
    except OSError:
        pass
    return []


def ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def gpus() -> list[str]:
    """GPU names from nvidia-smi (empty when there is none)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def package_versions(packages=PACKAGES) -> dict[str, str]:
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return versions


def ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """One JSON-able record of the machine; `load_average` is the 1/5/15-minute load when called."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "ram_gb": ram_gb(),
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "ort_providers": ort_providers(),
        "load_average_start": load_average(),
    }


def describe(machine: dict) -> str:
    """One line for report headers: CPU, cores, RAM, GPU."""
    gpu = ", ".join(machine.get("gpus") or []) or "no GPU"
    flags = machine.get("cpu_flags")
    isa = f" ({'/'.join(flags) or 'no AVX2'})" if flags is not None else ""
    return (f"{machine.get('cpu')}{isa}, {machine.get('logical_cores')} logical cores, {machine.get('ram_gb')} GB RAM, {gpu}; "
            f"{machine.get('os')}, Python {machine.get('python')}")
