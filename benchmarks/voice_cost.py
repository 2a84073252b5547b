"""What the speaker embedding costs on the live path: time per utterance on one thread, and memory.

    python benchmarks/voice_cost.py [--repeats 30] [--out benchmarks/results/voice]

Loads the GE2E voice encoder as the live tracker does (memocmt.voice.voice_encoder: the cached
ONNX graph, exported on first use), measures the resident set size before and after, then embeds
speech-like utterances of 1, 3, 6 and 10 s: warm-up, `--repeats` timed runs each, median and p90
(front end alone and the whole embedding). Writes <out>/cost.json and cost.md with the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memocmt import voice  # noqa: E402

DURATIONS_S = (1.0, 3.0, 6.0, 10.0)
WARMUP = 3


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * voice.SAMPLE_RATE)) / voice.SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    tone = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / voice.SAMPLE_RATE) / k for k in range(1, 10))
    return (0.1 * tone * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def timed(fn, audio: np.ndarray, repeats: int) -> list[float]:
    for _ in range(WARMUP):
        fn(audio)
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(audio)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time and memory of the GE2E speaker embedding on the live path.")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per duration (default: 30)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "voice")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1.")
    from benchmarks.accuracy import write_result
    from benchmarks.machine import describe, machine_info

    import onnxruntime  # noqa: F401  (loaded before the baseline, as the live runtime has it)

    before = rss_mb()
    encoder = voice.voice_encoder()
    if encoder is None:
        parser.error(f"The voice encoder is not installed; {voice.VOICE_EXTRA}.")
    encoder.embed(speech_like(3.0))
    loaded = rss_mb()
    rows = []
    for seconds in DURATIONS_S:
        audio = speech_like(seconds)
        front = timed(voice.partial_mels, audio, args.repeats)
        whole = timed(encoder.embed, audio, args.repeats)
        rows.append({"seconds": seconds, "partials": len(voice.partial_starts(len(audio))),
                     "front_end_ms_median": float(np.median(front)), "embed_ms_median": float(np.median(whole)),
                     "embed_ms_p90": float(np.percentile(whole, 90))})
    machine = machine_info()
    result = {"rows": rows, "rss_mb_before": round(before, 1), "rss_mb_after": round(rss_mb(), 1),
              "rss_mb_loaded": round(loaded, 1), "graph": str(encoder.path), "threads": 1, "machine": machine}
    lines = ["# GE2E speaker embedding: cost on the live path", "",
             f"Machine: {describe(machine)}; load average {machine.get('load_average_start')}. One ONNX Runtime thread; {args.repeats} timed runs after {WARMUP} "
             f"warm-up runs per duration; `python benchmarks/voice_cost.py`.", "",
             "| utterance | partials | front end (NumPy) median | whole embedding median | p90 |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seconds']:.0f} s | {r['partials']} | {r['front_end_ms_median']:.1f} ms | "
                     f"{r['embed_ms_median']:.1f} ms | {r['embed_ms_p90']:.1f} ms |")
    lines += ["", f"Resident memory: {result['rss_mb_before']:.0f} MB before loading the encoder, "
              f"{result['rss_mb_loaded']:.0f} MB after loading it and one embedding "
              f"(+{result['rss_mb_loaded'] - result['rss_mb_before']:.0f} MB), {result['rss_mb_after']:.0f} MB after the runs."]
    write_result(args.out, "cost", result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
