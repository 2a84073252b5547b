"""Speaker-independent accuracy over all 20 RAVDESS actors: every group of four actors is the test set once.

    python training/recipes/test_rotation.py --work runs/default-model

The shipped model is scored on actors 17-20 alone: 111 utterances (4 classes), too few to tell two
heads apart (the training seed alone moves UA by a point or more). Here the default recipe's 4-class
config is retrained five times, each time on 16 actors plus the synthetic corpus, and scored on the
other four (01-04, 05-08, 09-12, 13-16, 17-20: 559 test utterances in all), for the fusion head and
the audio-only ablation. The rotation with 17-20 as test is the shipped model's own recipe.

Every run trains for the epoch count the recipe's cross-validation chose over actors 01-16
(<work>/edge-ravdess4/cv.json; the config's whole schedule without one). That count is the one
choice the test groups 01-16 took part in; nothing else is chosen here. Each test actor's speaker
statistics pool all of its test utterances, as in the recipe's evaluation.

Runs go side by side in forked workers (memocmt.parallel). Writes <work>/rotation/rotation.json and
rotation.md: UA per group, the mean over groups, and the UA of all test utterances pooled.
Needs a finished `training/recipes/default_model.py` run in --work (its synthetic corpus and cv.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memocmt.corpora import build_ravdess  # noqa: E402
from memocmt.crossval import final_config  # noqa: E402
from memocmt.manifest import write_manifest  # noqa: E402
from memocmt.parallel import cpu_workers, map_forked  # noqa: E402
from memocmt.train import TrainConfig, load_config, train  # noqa: E402

GROUPS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
HEADS = {"fusion": [], "audio-only": ["model.modalities=audio"]}
logger = logging.getLogger("memocmt")


@dataclasses.dataclass
class RotationRun:
    head: str
    group: tuple[int, ...]
    config: TrainConfig
    run_dir: Path


def group_name(group: tuple[int, ...]) -> str:
    return f"{group[0]:02d}-{group[-1]:02d}"


def confusion_ua(confusion: np.ndarray) -> float:
    """Macro recall of a confusion matrix (rows: true class)."""
    return float(np.mean(np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)))


def train_and_score(run: RotationRun) -> dict:
    """Train one rotation's head and score it on its test actors (the run's test split)."""
    from memocmt.evaluate import evaluate_manifest
    from memocmt.manifest import read_manifest
    from memocmt.model import load_checkpoint

    started = time.perf_counter()
    train(run.config, run.run_dir, progress=False)
    test = read_manifest(run.config.manifests[0]).split("test")
    report = evaluate_manifest(load_checkpoint(run.run_dir / "best.safetensors"), test, batch_size=16, progress=False).report
    logger.info("%s, test actors %s: UA %.2f%%", run.head, group_name(run.group), 100 * report.ua)
    return {"ua": report.ua, "wa": report.wa, "n": report.n, "confusion": np.asarray(report.confusion).tolist(),
            "seconds": round(time.perf_counter() - started, 1)}


def markdown(result: dict) -> str:
    groups = list(next(iter(result["heads"].values()))["groups"])
    lines = ["| head | " + " | ".join(f"test {g}" for g in groups) + " | mean over groups (std) | all test utterances pooled |",
             "|---|" + "---:|" * (len(groups) + 2)]
    for head, row in result["heads"].items():
        cells = " | ".join(f"{100 * row['groups'][g]['ua']:.1f}%" for g in groups)
        lines.append(f"| {head} | {cells} | {100 * row['mean_ua']:.1f}% ({100 * row['std_ua']:.1f}) | {100 * row['pooled_ua']:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RAVDESS 4-class UA with every group of four actors as the test set once.")
    parser.add_argument("--work", default="runs/default-model", help="work folder of a finished default_model.py run")
    parser.add_argument("--ravdess", default=str(REPO.parent / "shared" / "data" / "ravdess-a01-a20"),
                        help="RAVDESS root with Actor_XX folders")
    parser.add_argument("--heads", nargs="+", choices=tuple(HEADS), default=list(HEADS), help="heads to rotate")
    parser.add_argument("--workers", type=int, default=0, help="runs side by side (0: as many as the CPU cores allow)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override applied to every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = Path(args.work)
    synthetic = work / "data" / "synthetic" / "manifest.jsonl"
    if not synthetic.is_file():
        parser.error(f"{work} holds no recipe data; run training/recipes/default_model.py --work {work} first.")
    if not Path(args.ravdess).is_dir():
        parser.error(f"--ravdess {args.ravdess} is not a directory.")
    cv_path = work / "edge-ravdess4" / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else None
    out = work / "rotation"
    runs = []
    for i, group in enumerate(GROUPS):
        val = GROUPS[i - 1][-2:]  # two actors of the previous group; train_on_val trains on them too
        manifest = build_ravdess(args.ravdess, classes="4", test_speakers=group, val_speakers=val)
        path = write_manifest(out / "data" / f"ravdess4-test{group_name(group)}.jsonl", manifest, relative=False)
        for head in args.heads:
            name = f"{head}-test{group_name(group)}"
            config = load_config(REPO / "training" / "configs" / "edge-ravdess.yaml",
                                 [f"out_dir={out}", f"run_name={name}", f"manifests=[{path}, {synthetic}]", "cv_folds=0",
                                  *HEADS[head], *args.overrides])
            config = final_config(config, cv) if cv else dataclasses.replace(config, train_on_val=True)
            runs.append(RotationRun(head, group, config, out / name))
    _fill_cache(runs[0].config, [r.config.manifests[0] for r in runs if r.group == GROUPS[0]][0])

    threads = runs[0].config.threads or 1
    workers = args.workers or cpu_workers(len(runs), threads)
    started = time.perf_counter()
    scores = map_forked(train_and_score, runs, workers, threads)
    result: dict = {"epochs": runs[0].config.stop_epoch or runs[0].config.epochs,
                    "epochs_from": str(cv_path) if cv else "the config's schedule", "heads": {},
                    "seconds": round(time.perf_counter() - started, 1), "workers": workers, "machine": platform.platform()}
    for head in args.heads:
        rows = {group_name(r.group): s for r, s in zip(runs, scores) if r.head == head}
        uas = np.array([s["ua"] for s in rows.values()])
        pooled = np.sum([np.asarray(s["confusion"]) for s in rows.values()], axis=0)
        result["heads"][head] = {"groups": rows, "mean_ua": float(uas.mean()), "std_ua": float(uas.std(ddof=1)),
                                 "pooled_ua": confusion_ua(pooled), "pooled_n": int(pooled.sum())}
    (out / "rotation.json").write_text(json.dumps(result, indent=2))
    (out / "rotation.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _fill_cache(config: TrainConfig, manifest_path: str) -> None:
    """Encode every RAVDESS utterance and its perturbed copies once, before the runs fork, so that no two
    workers encode the same file (the recipe itself never perturbs its test actors)."""
    from memocmt.config import preset
    from memocmt.embed_cache import EmbeddingCache
    from memocmt.manifest import read_manifest
    from memocmt.model import MemoCMT
    from memocmt.perturb import parse_perturbations

    manifest = read_manifest(manifest_path)
    model = MemoCMT(preset(config.preset, labels=list(manifest.labels), **config.model))
    cache = EmbeddingCache(config.cache_dir, model)
    paths = [u.audio for u in manifest.items]
    cache.fill_audio(paths)
    for p in parse_perturbations(config.perturb):
        cache.fill_audio(paths, perturbation=p)


if __name__ == "__main__":
    sys.exit(main())
