"""How does a speaker-normalised model's accuracy grow with the number of utterances heard from a
speaker, as it does live? For the shipped model on the RAVDESS test actors 17-20 (4 classes): UA
69.4% on a speaker's first utterance (statistics mostly the prior), 70.5-72.0% after 2-5, 74.1%
after 10, 76.9% after 20, and 78.0% with all of the actor's utterances (mean of 5 random draws).
Results: benchmarks/results/adaptation/shipped.md and .json.

    python benchmarks/studies/adaptation.py --ravdess ../shared/data/ravdess-a01-a20 [--model CKPT_OR_BUNDLE]

Live, the model pools the audio statistics of the session's utterances so far with its prior
(memocmt.speaker_norm). This scores the RAVDESS test actors 17-20 with each utterance's speaker
statistics taken from K of that actor's utterances (the one classified and K-1 others drawn at
random) and the prior, for several K, averaged over `--draws` random draws; "all" pools every
utterance of the actor without the prior, as `memocmt-eval` does. Default model: the shipped one.
Writes benchmarks/results/adaptation/<model>.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from benchmarks.accuracy import ravdess_test, write_result  # noqa: E402
from memocmt.evaluate import align_labels, evaluate_speaker_utterances, load_predictor  # noqa: E402

DEFAULT_K = (1, 2, 3, 5, 10, 20)


def adaptation_curve(predictor, manifest, ks=DEFAULT_K, draws: int = 5) -> dict:
    """UA (mean and spread over draws) per K, plus UA with all of each speaker's utterances."""
    by_draw = [evaluate_speaker_utterances(predictor, manifest, (0, *ks) if d == 0 else ks, batch_size=16,
                                           progress=False, seed=d)
               for d in range(draws)]  # one encoding per draw serves every K
    rows = {}
    for k in ks:
        uas = [results[k].report.ua for results in by_draw]
        rows[str(k)] = {"ua_mean": float(np.mean(uas)), "ua_min": float(np.min(uas)), "ua_max": float(np.max(uas)), "ua": uas}
    rows["all"] = {"ua_mean": by_draw[0][0].report.ua}
    return rows


def to_markdown(result: dict) -> str:
    lines = [f"# Accuracy against utterances heard: {result['model']}", "",
             f"RAVDESS test actors 17-20 ({result['n']} utterances, {result['classes']} classes); speaker statistics "
             f"from K utterances of the actor and the model's prior, UA mean [min-max] over {result['draws']} draws. "
             f"Machine: {result['machine']}.", "", "| utterances heard (K) | UA |", "|---|---:|"]
    for k, row in result["curve"].items():
        spread = f" [{100 * row['ua_min']:.1f}-{100 * row['ua_max']:.1f}]" if "ua_min" in row else ""
        lines.append(f"| {k} | {100 * row['ua_mean']:.1f}%{spread} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UA against the number of utterances heard from each speaker.")
    parser.add_argument("--ravdess", type=Path, default=REPO.parent / "shared" / "data" / "ravdess-a01-a20")
    parser.add_argument("--model", help="checkpoint or ONNX bundle (default: the shipped model)")
    parser.add_argument("--draws", type=int, default=5, help="random draws of the other utterances per K (default: 5)")
    parser.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_K), help="utterances heard (default: 1 2 3 5 10 20)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "adaptation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not args.ravdess.is_dir():
        parser.error(f"RAVDESS not found at {args.ravdess}; pass --ravdess.")
    if args.draws < 1 or min(args.k) < 1:
        parser.error("--draws and every --k must be at least 1.")
    predictor = load_predictor(args.model)
    if not getattr(predictor, "speaker_norm", ""):
        parser.error(f"{args.model or 'the shipped model'} is not speaker-normalised; nothing adapts.")
    manifest = align_labels(ravdess_test(args.ravdess), predictor.labels)
    started = time.perf_counter()
    curve = adaptation_curve(predictor, manifest, args.k, args.draws)
    name = Path(args.model).stem if args.model else "shipped"
    result = {"model": args.model or "shipped", "n": len(manifest), "classes": len(predictor.labels), "draws": args.draws,
              "curve": curve, "machine": platform.platform(), "seconds": round(time.perf_counter() - started, 1)}
    write_result(args.out, name, result, to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
