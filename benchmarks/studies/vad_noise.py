"""Which voice activity detector hears each utterance in noise: the segmenter alone, many settings, one run.

    python benchmarks/studies/vad_noise.py                       # the default conditions and VAD settings
    python benchmarks/studies/vad_noise.py --conditions clean "babble 20" --vads "webrtc 2" "silero 0.7"

The sessions and conditions are those of benchmarks/robustness.py (RAVDESS test actors 17-20, one
28-clip session each, 1 s pauses; noise through the pauses, babble of training actors only). Each
degraded session is cut by `memocmt.live.vad.Segmenter` alone (no ASR, no emotion model, the
live defaults for pre-roll, hangover, minimum and maximum length), and segments are matched to
clips by overlap as the live-path benchmark matches results. A clip is heard when one segment
is its own; `merged` counts segments that cover more than one clip, `spurious` segments that
cover none. Heard clips are what the emotion model can classify, so this bounds the live UA of
every condition before a model is involved; it takes a minute or two, not the half hour of the
full grid. Results: <out>/vad_noise.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CONDITIONS = ["clean", "pink 20", "pink 10", "babble 20", "babble 10", "room 0.6 3", "clicks 20"]
VADS = ["webrtc 2", "webrtc 3", "silero 0.5", "silero 0.7", "silero 0.85"]


def parse_vad(spec: str):
    """'webrtc AGGRESSIVENESS' or 'silero THRESHOLD' -> VadConfig (live defaults otherwise)."""
    from memocmt.live.vad import VadConfig

    backend, _, value = spec.partition(" ")
    if backend == "webrtc":
        config = VadConfig(backend="webrtc", aggressiveness=int(value or 2))
    elif backend == "silero":
        config = VadConfig(backend="silero", threshold=float(value or 0.5))
    else:
        raise SystemExit(f"--vads {spec!r}: write 'webrtc 0..3' or 'silero THRESHOLD'.")
    config.validate()
    return config


def segments_of(audio: np.ndarray, config) -> list[dict]:
    from memocmt.live.vad import Segmenter, make_classifier

    segmenter = Segmenter(make_classifier(config), config)
    out = []
    for start in range(0, len(audio), 4800):  # 0.3 s blocks, as a capture device delivers them
        out += [s for s in segmenter.push(audio[start:start + 4800]) if not s.tentative]
    out += segmenter.flush()
    return [{"start_s": s.start_s, "end_s": s.end_s} for s in out]


def score(clips: list, segments: list[dict]) -> dict:
    from benchmarks.live_accuracy import match

    matched, spurious = match(clips, segments)
    merged = 0
    for s in segments:
        covered = sum(min(s["end_s"], c.end_s) - max(s["start_s"], c.start_s) > 0.1 for c in clips)
        merged += covered > 1
    return {"heard": len(matched), "clips": len(clips), "segments": len(segments), "merged": merged,
            "spurious": spurious}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ravdess", type=Path, default=REPO.parent / "shared" / "data" / "ravdess-a01-a20")
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS, metavar="SPEC")
    parser.add_argument("--vads", nargs="+", default=VADS, metavar="SPEC")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "vad_noise")
    args = parser.parse_args(argv)
    if not args.ravdess.is_dir():
        parser.error(f"RAVDESS not found at {args.ravdess}; pass --ravdess.")
    from benchmarks.machine import describe, machine_info
    from benchmarks.robustness import babble_sources, build_sessions, degrade, parse_grid, condition_name

    started = time.perf_counter()
    labels = ["neutral", "happy", "sad", "angry"]
    work = Path(tempfile.mkdtemp(prefix="memocmt-vad-noise-"))
    sessions = build_sessions(args.ravdess, work, labels, 1.0, args.seed)
    grid = parse_grid(args.conditions)
    sources = babble_sources(args.ravdess, seed=args.seed) if any(c is not None and c.needs_sources for c in grid) else None
    vads = {spec: parse_vad(spec) for spec in args.vads}
    rows = []
    for condition in grid:
        heard_audio = [degrade(s["audio"], condition, s["name"], sources) for s in sessions]
        # what the live path reads: the session written as 16-bit PCM
        heard_audio = [np.round(np.clip(a, -1, 1) * 32767).astype(np.float32) / 32767 for a in heard_audio]
        for spec, config in vads.items():
            t0 = time.perf_counter()
            totals: dict[str, int] = {}
            for s, audio in zip(sessions, heard_audio):
                for k, v in score(s["clips"], segments_of(audio, config)).items():
                    totals[k] = totals.get(k, 0) + v
            totals["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append({"condition": condition_name(condition), "vad": spec, **totals})
            print(f"{condition_name(condition):>12}  {spec:<12} heard {totals['heard']:>3}/{totals['clips']}  "
                  f"merged {totals['merged']:>2}  spurious {totals['spurious']:>2}", flush=True)
    result = {"conditions": args.conditions, "vads": args.vads, "seed": args.seed, "rows": rows,
              "machine": machine_info(), "seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vad_noise.json").write_text(json.dumps(result, indent=2))
    lines = ["# Clips heard by the segmenter alone, per condition and VAD setting", "",
             f"`python benchmarks/studies/vad_noise.py` (RAVDESS test actors 17-20, 111 clips, seed {args.seed}). "
             f"Machine: {describe(result['machine'])}; {result['seconds']} s.", "",
             "| condition | " + " | ".join(args.vads) + " |", "|---|" + "---:|" * len(args.vads)]
    by = {(r["condition"], r["vad"]): r for r in rows}
    for condition in grid:
        name = condition_name(condition)
        cells = [f"{by[name, v]['heard']} ({by[name, v]['merged']} merged, {by[name, v]['spurious']} spurious)"
                 for v in args.vads]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (args.out / "vad_noise.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
