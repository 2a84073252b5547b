"""How much of a difference between two heads is the training seed? Retrain the default model's
fusion and audio-only heads with other seeds and score them on the RAVDESS test actors and on the
synthetic test voices (where the words carry emotion, so fusion should lead audio-only), and
their late fusion (the two heads of one seed as one checkpoint, as the shipped model is).

    python training/recipes/seed_spread.py --work runs/default-model --seeds 1 2 3 [--reuse]

Needs a finished `training/recipes/default_model.py` run in `--work` (its data and, with
cross-validation, the chosen epoch count in edge-ravdess4/cv.json); the recipe's own runs count as
seed 0. Writes <work>/seed_spread.json and prints a table per test set: UA per seed, mean and standard deviation.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memocmt.trainer.crossval import final_config  # noqa: E402
from memocmt.ensemble import build_ensemble  # noqa: E402
from memocmt.evaluate import evaluate_manifest  # noqa: E402
from memocmt.manifest import read_manifest  # noqa: E402
from memocmt.model import load_checkpoint  # noqa: E402
from memocmt.trainer.train import load_config, train  # noqa: E402

HEADS = {"fusion": ("edge-ravdess4", []), "audio-only": ("edge-ravdess4-audio", ["model.modalities=audio"])}


def test_ua(model, tests: dict) -> dict[str, float]:
    return {name: evaluate_manifest(model, m, batch_size=16, progress=False).report.ua for name, m in tests.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Test UA of the default model's heads over training seeds.")
    parser.add_argument("--work", default="runs/default-model", help="work folder of a finished default_model.py run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds to train besides the recipe's")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override applied to every run (as given to the recipe)")
    parser.add_argument("--reuse", action="store_true",
                        help="score seed runs already finished in <work>/seeds again instead of retraining them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = Path(args.work)
    data = work / "data"
    if not (data / "ravdess4.jsonl").is_file():
        parser.error(f"{work} holds no recipe data; run training/recipes/default_model.py --work {work} first.")
    cv_path = work / "edge-ravdess4" / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else None
    tests = {"ravdess": read_manifest(data / "ravdess4.jsonl").split("test"),
             "synthetic": read_manifest(data / "synthetic" / "manifest.jsonl").split("test")}
    manifests = f"[{data / 'ravdess4.jsonl'}, {data / 'synthetic' / 'manifest.jsonl'}]"
    table: dict[str, dict[str, float]] = {}
    checkpoints: dict[str, dict[str, Path]] = {}  # head -> seed -> checkpoint
    for head, (recipe_run, extra) in HEADS.items():
        found = checkpoints.setdefault(head, {})
        if (work / recipe_run / "best.safetensors").is_file():
            found["0"] = work / recipe_run / "best.safetensors"
        for seed in args.seeds:
            name = f"seeds/{recipe_run}-seed{seed}"
            if not (args.reuse and (work / name / "best.safetensors").is_file()):
                config = load_config(REPO / "training" / "configs" / "edge-ravdess.yaml",
                                     [f"out_dir={work}", f"run_name={name}", f"manifests={manifests}", f"seed={seed}",
                                      *extra, *args.overrides])
                if cv is not None:
                    config = final_config(config, cv)
                train(config, work / name, progress=False)
            found[str(seed)] = work / name / "best.safetensors"
    seeds = {head: list(found) for head, found in checkpoints.items()}
    seeds["late fusion"] = [seed for seed in seeds["fusion"] if seed in seeds["audio-only"]]

    def load(head: str, seed: str):
        if head == "late fusion":  # the two heads of one seed as one checkpoint, as the recipe ships them
            return build_ensemble([checkpoints["fusion"][seed], checkpoints["audio-only"][seed]])
        return load_checkpoint(checkpoints[head][seed])

    for head, head_seeds in seeds.items():
        scores = {}
        for seed in head_seeds:
            scores[seed] = test_ua(load(head, seed), tests)
            logging.info("%s seed %s: test UA %s", head, seed, ", ".join(f"{k} {100 * v:.2f}%" for k, v in scores[seed].items()))
        for test in tests:
            per_seed = {seed: ua[test] for seed, ua in scores.items()}
            values = np.array(list(per_seed.values()))
            table.setdefault(test, {})[head] = {"per_seed": per_seed, "mean": float(values.mean()),
                                                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    (work / "seed_spread.json").write_text(json.dumps(table, indent=2))
    for test, rows in table.items():
        print(f"\n{test} test UA\n")
        print("| head | " + " | ".join(f"seed {s}" for s in rows["fusion"]["per_seed"]) + " | mean | std |")
        print("|---|" + "---:|" * (len(rows["fusion"]["per_seed"]) + 2))
        for head, row in rows.items():
            print(f"| {head} | " + " | ".join(f"{100 * v:.1f}%" for v in row["per_seed"].values())
                  + f" | {100 * row['mean']:.1f}% | {100 * row['std']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
