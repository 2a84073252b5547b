"""Whisper tiny.en or Whisper base as the audio encoder: accuracy per corpus and live latency, side by side.

    python benchmarks/encoder_choice.py --tiny-bundle B1 --base-bundle B2 \
        --tiny-results benchmarks/results/cross_corpus --base-results benchmarks/results/encoder_choice/base

Accuracy: the `mixed` run (RAVDESS + nEMO) of the cross-corpus protocol (training/recipes/cross_corpus.py), once
with each encoder (`--set preset=edge-base` for base), scored per corpus on the held-out speakers (UA, WA, ECE),
and base's UA minus tiny.en's on the same utterances with a 95% paired bootstrap interval (utterances resampled
within each test speaker: memocmt.evaluate.compare_predictions).

Latency: benchmarks/live_latency.py, each configuration in its own process (so its peak RSS is its own), the same
espeak-ng session played in real time: end of speech to result p50/p95, compute per utterance and peak RSS.
The configurations pair each emotion encoder with the ASR it can share its encoder pass with (short context) and
with the one Polish needs (multilingual base; with `--language auto` it detects the language, which needs Whisper's
30 s window). The product's budget: end-of-speech-to-result p95 <= BUDGET_P95_MS on 2 cores.
Writes <out>/encoder_choice.json and encoder_choice.md with the machine (CPU flags included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_P95_MS = 500.0  # end of speech to result, p95, on 2 cores
TESTS = ("ravdess", "nemo")


def configurations(tiny: str, base: str) -> dict[str, dict]:
    """name -> live_latency.py arguments and what the configuration stands for."""
    return {
        "tiny.en + tiny.en ASR (en)": {"args": ["--model", tiny], "encoder": "whisper-tiny.en",
                                       "note": "today's default: the ASR decodes from the emotion model's encoder pass"},
        "base + tiny.en ASR (en)": {"args": ["--model", base], "encoder": "whisper-base",
                                    "note": "English ASR as today; it cannot share base's encoder pass"},
        "base + base ASR (en)": {"args": ["--model", base, "--asr-model", "whisper-base", "--language", "en"],
                                 "encoder": "whisper-base", "note": "one base encoder pass for emotion and ASR"},
        "base + base ASR (pl)": {"args": ["--model", base, "--asr-model", "whisper-base", "--language", "pl"],
                                 "encoder": "whisper-base", "note": "Polish transcription, language given"},
        "base + base ASR (auto)": {"args": ["--model", base, "--asr-model", "whisper-base", "--language", "auto"],
                                   "encoder": "whisper-base", "note": "language detected per utterance (30 s window)"},
        "tiny.en + base ASR (pl)": {"args": ["--model", tiny, "--asr-model", "whisper-base", "--language", "pl"],
                                    "encoder": "whisper-tiny.en", "note": "Polish transcription beside the tiny.en encoder"},
    }


def run_latency(args: list[str], utterances: int) -> dict:
    """One live_latency.py run in its own process; its JSON report."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "live_latency.py"), "--utterances", str(utterances), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"live_latency.py {' '.join(args)} failed: {last}")
    return json.loads(done.stdout[done.stdout.index("{"):])


def accuracy(results_dir: Path) -> dict:
    """The mixed run's per-corpus figures and predictions from a cross-corpus results folder."""
    summary = json.loads((results_dir / "cross_corpus.json").read_text())
    if "mixed" not in summary["runs"]:
        raise ValueError(f"{results_dir / 'cross_corpus.json'} has no mixed run; run the protocol with --runs mixed.")
    rows = json.loads((results_dir / "predictions-mixed.json").read_text())
    return {"encoder": summary["audio_encoder"], "epochs": summary["epochs"], "epoch_size": summary.get("epoch_size"),
            "perturb": summary["perturb"], "command": summary["command"],
            "scores": {c: {k: summary["runs"]["mixed"][c][k] for k in ("ua", "wa", "ece", "n")} for c in TESTS},
            "rows": rows}


def markdown(report: dict) -> str:
    lines = ["| audio encoder | " + " | ".join(f"{c} UA | {c} WA | {c} ECE" for c in TESTS) + " |",
             "|---|" + "---:|---:|---:|" * len(TESTS)]
    for enc in report["accuracy"].values():
        lines.append(f"| {enc['encoder']} | " + " | ".join(
            f"{100 * enc['scores'][c]['ua']:.1f}% | {100 * enc['scores'][c]['wa']:.1f}% | {enc['scores'][c]['ece']:.3f}"
            for c in TESTS) + " |")
    if report.get("base_minus_tiny"):
        lines.append("| base minus tiny.en (UA, points, 95% paired bootstrap) | " + " | ".join(
            f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] | | "
            for d in (report["base_minus_tiny"][c] for c in TESTS)) + " |")
    lines += ["", f"Live latency, end of speech to result (budget: p95 <= {BUDGET_P95_MS:.0f} ms):", "",
              "| configuration | ASR context | p50 ms | p95 ms | within budget | ASR ms | emotion ms | peak RSS MB |",
              "|---|---|---:|---:|---|---:|---:|---:|"]
    for name, r in report["latency"].items():
        lat = r["latency_ms"].get("eos_to_result", {})
        lines.append(f"| {name} | {r['config']['asr_context']} | {lat.get('p50', float('nan')):.0f} | "
                     f"{lat.get('p95', float('nan')):.0f} | {'yes' if r['within_budget'] else 'no'} | "
                     f"{r['compute_ms']['asr_ms']:.0f} | {r['compute_ms'].get('emotion_ms', float('nan')):.0f} | "
                     f"{r['rss_mb']['peak']:.0f} |")
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, CPU flags {', '.join(m['cpu_flags']) or 'none'}, "
              f"load average at start {m.get('load_average_start')}. {report['seconds']:.0f} s wall."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import machine_info

    p = argparse.ArgumentParser(description="Whisper tiny.en or base as the audio encoder: accuracy and live latency.")
    p.add_argument("--tiny-bundle", required=True, help="ONNX bundle of a tiny.en model (memocmt-export)")
    p.add_argument("--base-bundle", required=True, help="ONNX bundle of a Whisper base model (memocmt-export)")
    p.add_argument("--tiny-results", help="cross-corpus results folder of the tiny.en protocol")
    p.add_argument("--base-results", help="cross-corpus results folder of the base protocol (with --tiny-results)")
    p.add_argument("--latency-from", help="take the latency runs from this earlier encoder_choice.json instead of "
                                          "running them again (to add or refresh the accuracy)")
    p.add_argument("--configs", nargs="+", help="latency configurations to run (default: all)")
    p.add_argument("--utterances", type=int, default=12, help="utterances per latency run (default: 12)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "encoder_choice"), help="results folder")
    args = p.parse_args(argv)
    for flag in ("tiny_bundle", "base_bundle"):
        if not (Path(getattr(args, flag)) / "manifest.json").is_file():
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} is not an exported bundle (no manifest.json).")
    if (args.tiny_results is None) != (args.base_results is None):
        p.error("--tiny-results and --base-results go together.")
    for flag in ("tiny_results", "base_results") if args.tiny_results else ():
        if not (Path(getattr(args, flag)) / "cross_corpus.json").is_file():
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} holds no cross_corpus.json.")
    configs = configurations(args.tiny_bundle, args.base_bundle)
    unknown = sorted(set(args.configs or ()) - set(configs))
    if unknown:
        p.error(f"Unknown configuration(s) {unknown}; choose from: {'; '.join(configs)}.")
    started = time.perf_counter()
    from memocmt.evaluate import compare_predictions

    acc = {"tiny": accuracy(Path(args.tiny_results)), "base": accuracy(Path(args.base_results))} if args.tiny_results else {}
    diff = {}
    for c in TESTS if acc else ():
        tiny_rows, base_rows = acc["tiny"]["rows"][c], acc["base"]["rows"][c]
        labels = sorted({r["label"] for r in tiny_rows})
        diff[c] = compare_predictions(base_rows, tiny_rows, labels).to_dict()
    machine = machine_info()
    latency = {}
    if args.latency_from:
        earlier = json.loads(Path(args.latency_from).read_text())
        latency, machine = earlier["latency"], earlier["machine"]
    for name in [] if args.latency_from else (args.configs or configs):
        try:
            r = run_latency(configs[name]["args"], args.utterances)
        except RuntimeError as e:
            p.exit(1, f"{e}\n")
        p95 = r["latency_ms"].get("eos_to_result", {}).get("p95")
        latency[name] = {**r, "encoder": configs[name]["encoder"], "note": configs[name]["note"],
                         "within_budget": p95 is not None and p95 <= BUDGET_P95_MS}
        print(f"{name}: p95 {p95:.0f} ms, peak RSS {r['rss_mb']['peak']:.0f} MB", file=sys.stderr)
    report = {"benchmark": "encoder_choice", "budget_p95_ms": BUDGET_P95_MS, "machine": machine,
              "accuracy": {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in acc.items()},
              "base_minus_tiny": diff, "latency": latency, "seconds": round(time.perf_counter() - started, 1),
              "command": "python benchmarks/encoder_choice.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoder_choice.json").write_text(json.dumps(report, indent=2))
    (out / "encoder_choice.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run from a checkout
    sys.exit(main())
