"""Load one variant in a fresh process and report its load time, warm-up and peak memory.

    python -m benchmarks.worker '{"kind": "ort", "path": "...", "device": "cpu", "threads": 2}'

A fresh process per measurement makes load time include imports and makes peak RSS belong
to that variant alone. An ONNX Runtime variant imports only `memocmt.runtime` (no PyTorch),
as a deployment would. Prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

STEADY_CALLS = 3  # predictions on a 3 s clip after warm-up, so RSS includes steady-state buffers


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def peak_rss_mb() -> float:
    """This process's high-water RSS. VmHWM restarts at exec; ru_maxrss would keep the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (may include the parent's)


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.1 * np.sin(2 * np.pi * 180 * t) * (1 + rng.standard_normal(t.size) * 0.1)).astype(np.float32)


def measure(job: dict) -> dict:
    start = time.perf_counter()
    kind = job["kind"]
    if kind == "ort":
        from benchmarks.variants import OrtRunner, VARIANTS, warm_up_runner
        from memocmt.runtime import load_bundle

        imported = time.perf_counter()
        runner = OrtRunner(VARIANTS[job["variant"]], load_bundle(job["path"], job["device"], job["threads"], warm_up=False))
    elif kind == "torch":
        import torch

        from benchmarks.variants import ModelCache, Sources, TorchRunner, VARIANTS, warm_up_runner

        imported = time.perf_counter()
        torch.set_num_threads(job["threads"])
        sources = Sources(Path(job["checkpoint"]) if job.get("checkpoint") else None, Path(job["cache_dir"]), job["threads"])
        spec = VARIANTS[job["variant"]]
        runner = TorchRunner(spec, ModelCache(sources).get(spec.preset))
    elif kind == "asr":
        from memocmt.live.asr import AsrConfig, Transcriber

        imported = time.perf_counter()
        transcriber = Transcriber(AsrConfig(cpu_threads=job["threads"]))
    else:
        raise ValueError(f"Unknown job kind {kind!r}")
    loaded = time.perf_counter()
    rss_loaded = rss_mb()
    if kind == "asr":
        t = time.perf_counter()
        transcriber.warm_up()
        warmup_ms = (time.perf_counter() - t) * 1000
        for i in range(STEADY_CALLS):
            transcriber.transcribe(_clip(3.0, i))
    else:
        warmup_ms = warm_up_runner(runner)
        for i in range(STEADY_CALLS):
            runner.run_stages([_clip(3.0, i)], ["kids are talking by the door"])
    return {
        "import_ms": (imported - start) * 1000,
        "load_ms": (loaded - imported) * 1000,
        "warmup_ms": warmup_ms,
        "ready_ms": (loaded - start) * 1000 + warmup_ms,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
    }


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
