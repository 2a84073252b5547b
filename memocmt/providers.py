"""ONNX Runtime behind one small factory: lazy import, explicit options and providers.

Nothing here imports PyTorch. `create_session` is what the runtime and the export
verification both use, so a bundle is verified with the same settings it is served with.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache

logger = logging.getLogger("memocmt")

PROVIDER_CHOICES = ("auto", "cpu", "cuda")
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
MAX_DEFAULT_THREADS = 4  # more threads stop paying off for batch-1 latency


def import_onnxruntime():
    """The onnxruntime module, or one clear error saying which extra to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeError(
            "ONNX Runtime is not installed; run pip install 'memocmt-live[cpu]' or 'memocmt-live[gpu]'."
        ) from e
    return onnxruntime


def physical_cores() -> int:
    """Physical CPU cores (psutil when present, else the logical count)."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    return max(1, cores or os.cpu_count() or 1)


def default_threads() -> int:
    return min(MAX_DEFAULT_THREADS, physical_cores())


@dataclass(frozen=True)
class ProviderChoice:
    """Which execution provider a bundle runs on, and why."""

    device: str  # "cuda" or "cpu"
    providers: tuple  # what to pass to InferenceSession
    reason: str  # one phrase for the log line


def _cuda_usable(ort) -> tuple[bool, str]:
    if CUDA_EP not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDAExecutionProvider (install memocmt-live[gpu])"
    return True, ""


def choose_providers(request: str | None) -> ProviderChoice:
    """Resolve None/"auto"/"cpu"/"cuda" to a provider list: CUDA first when usable, then CPU."""
    request = (request or "auto").lower()
    if request not in PROVIDER_CHOICES:
        raise ValueError(f"Unknown provider {request!r}; choose one of {', '.join(PROVIDER_CHOICES)}.")
    ort = import_onnxruntime()
    if request == "cpu":
        return ProviderChoice("cpu", (CPU_EP,), "CPU requested")
    usable, why = _cuda_usable(ort)
    if usable:
        return ProviderChoice("cuda", (CUDA_EP, CPU_EP), f"CUDA {'requested' if request == 'cuda' else 'available'}")
    if request == "cuda":
        return ProviderChoice("cpu", (CPU_EP,), f"CUDA requested but {why}")
    return ProviderChoice("cpu", (CPU_EP,), "no CUDA provider available")


def session_options(threads: int | None = None, device: str = "cpu"):
    """SessionOptions for low-latency inference on small CPUs (and plain defaults on CUDA)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: the provider choice is reported by our own log line
    if device == "cpu":
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        # Spinning threads inflated latency 2-4x on 2-core machines shared with other work.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # The arena keeps the peak of the longest input for good: one 30 s utterance left the
        # Whisper encoder's session 300 MB larger. Without it a 3 s utterance runs as fast.
        opts.enable_cpu_mem_arena = False
    return opts


def create_session(path: str | os.PathLike, choice: ProviderChoice, threads: int | None = None):
    """An InferenceSession on the chosen providers; falls back to CPU only with a log line."""
    ort = import_onnxruntime()
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(threads, choice.device), providers=list(choice.providers)
        )
    except Exception as e:  # onnxruntime raises its own exception types for unloadable graphs
        raise RuntimeError(f"ONNX Runtime cannot load {path}: {e}") from e
    active = session.get_providers()
    if choice.device == "cuda" and CUDA_EP not in active:
        # onnxruntime-gpu without matching CUDA/cuDNN libraries silently runs on CPU.
        logger.warning("CUDA provider could not start for %s (CUDA/cuDNN libraries missing?); running on CPU", path)
    return session


@lru_cache(maxsize=1)
def ort_version() -> str:
    return import_onnxruntime().__version__
