"""Speaker-independent accuracy over all 20 RAVDESS actors: every group of four actors is the test set once.

    python training/recipes/actor_rotation.py --work runs/default-model

The shipped model is scored on actors 17-20 alone: 111 utterances (4 classes), too few to tell two
heads apart (the training seed alone moves UA by a point or more). Here the default recipe's 4-class
config is retrained five times, each time on 16 actors plus the synthetic corpus, and scored on the
other four (01-04, 05-08, 09-12, 13-16, 17-20: 559 test utterances in all), for the fusion head and
the audio-only ablation. The rotation with 17-20 as test is the shipped model's own recipe.

Every run trains for the epoch count the recipe's cross-validation chose over actors 01-16
(<work>/edge-ravdess4/cv.json; the config's whole schedule without one). That count is the one
choice the test groups 01-16 took part in; nothing else is chosen here. Each test actor's speaker
statistics pool all of its test utterances, as in the recipe's evaluation.

Every head is also scored on the synthetic test voices (where the words carry the emotion). With
both heads, a third row combines them by late fusion: the product of the fusion and audio-only
heads' probabilities (the sum of their log-probabilities), scored the same way; no head is retrained.

With --voices SPEC..., every head is also scored with test-time augmentation (memocmt.evaluate.evaluate_voices):
each test utterance classified as recorded and as each perturbed voice, the probabilities averaged; those
rows are named "<head> + voices".

With --without-test-actors the rotation covers actors 01-16 only and leaves 17-20 out of every
run (4-fold cross-validation with whole retraining per fold): the comparison to choose a head by.

Runs go side by side in forked workers (memocmt.trainer.parallel); a run whose folder already holds a
finished run of the same config is reused, so an interrupted rotation continues and a rerun only
scores. Writes <work>/rotation/rotation.json and rotation.md (or into --out): UA per group, the mean over groups,
the UA of all test utterances pooled, and the synthetic UA (mean over the row's runs); then every row's UA
against the audio-only head's on the same utterances, with a 95% paired bootstrap interval (RAVDESS
resampling whole actors), which says whether the gap between two rows is more than chance.
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
from memocmt.trainer.crossval import final_config  # noqa: E402
from memocmt.manifest import Manifest, write_manifest  # noqa: E402
from memocmt.trainer.parallel import cpu_workers, map_forked  # noqa: E402
from memocmt.perturb import parse_perturbations  # noqa: E402
from memocmt.trainer.train import TrainConfig, load_config, train  # noqa: E402

GROUPS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
HEADS = {"fusion": [], "audio-only": ["model.modalities=audio"]}
LATE_FUSION = "fusion x audio-only"  # product of the two heads' probabilities
VOICES = " + voices"  # suffix of the rows scored with test-time augmentation over perturbed voices
logger = logging.getLogger("memocmt")


@dataclasses.dataclass
class RotationRun:
    head: str
    group: tuple[int, ...]
    config: TrainConfig
    run_dir: Path
    synthetic: Path  # the synthetic corpus's manifest: its test voices are scored too
    voices: tuple[str, ...] = ()  # perturbations for test-time augmentation (scored besides the plain rows)


def group_name(group: tuple[int, ...]) -> str:
    return f"{group[0]:02d}-{group[-1]:02d}"


def finished(run: RotationRun) -> bool:
    """Whether the run folder holds a finished training run of exactly this config."""
    import yaml

    config_file, metrics = run.run_dir / "train_config.yaml", run.run_dir / "metrics.jsonl"
    if not ((run.run_dir / "best.safetensors").is_file() and config_file.is_file() and metrics.is_file()):
        return False
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    last = json.loads(lines[-1])["epoch"] if lines else 0
    return yaml.safe_load(config_file.read_text()) == dataclasses.asdict(run.config) and \
        last == (run.config.stop_epoch or run.config.epochs)


def train_and_score(run: RotationRun) -> dict:
    """Train one rotation's head (unless a finished run is there) and score it on its test actors (the
    run's test split) and on the synthetic test voices, keeping the probabilities for late fusion."""
    from memocmt.evaluate import evaluate_manifest, evaluate_voices
    from memocmt.manifest import read_manifest
    from memocmt.model import load_checkpoint

    started = time.perf_counter()
    reused = finished(run)
    if not reused:
        train(run.config, run.run_dir, progress=False)
    model = load_checkpoint(run.run_dir / "best.safetensors")
    scores, with_voices = {}, {}
    voices = parse_perturbations(list(run.voices))
    for name, path in (("ravdess", run.config.manifests[0]), ("synthetic", run.synthetic)):
        test = read_manifest(path).split("test")
        scores[name] = _scores(evaluate_manifest(model, test, batch_size=16, progress=False), test)
        if voices:
            with_voices[name] = _scores(evaluate_voices(model, test, voices, batch_size=16, progress=False), test)
    logger.info("%s, test actors %s: UA %.2f%% (synthetic %.2f%%)%s%s", run.head, group_name(run.group),
                100 * scores["ravdess"]["ua"], 100 * scores["synthetic"]["ua"],
                f"; with voices {100 * with_voices['ravdess']['ua']:.2f}% ({100 * with_voices['synthetic']['ua']:.2f}%)"
                if voices else "", ", reused" if reused else "")
    return {**scores, "voices": with_voices, "reused": reused, "seconds": round(time.perf_counter() - started, 1)}


def _scores(result, manifest) -> dict:
    from memocmt.evaluate import prediction_rows

    rows = prediction_rows(result, manifest)
    return {"ua": result.report.ua, "wa": result.report.wa, "n": result.report.n, "labels": list(result.report.labels),
            "targets": [r["label"] for r in rows], "probabilities": result.probabilities.tolist(),
            "ids": [r["id"] for r in rows], "speakers": [r["speaker"] for r in rows]}


def ua_of(targets: list[str], probabilities: np.ndarray, labels: list[str]) -> float:
    """UA (macro recall) of the classes `probabilities` (N, classes) pick against the true labels."""
    from memocmt.metrics import classification_report

    index = {label: i for i, label in enumerate(labels)}
    return classification_report([index[t] for t in targets], np.asarray(probabilities).argmax(1), labels).ua


def summarize(rows: dict[str, dict]) -> dict:
    """One head's (or combination's) row from its per-group scores: UA per group, mean, std, pooled, synthetic."""
    groups = {g: {"ua": r["ravdess"]["ua"], "n": r["ravdess"]["n"], "synthetic_ua": r["synthetic"]["ua"]} for g, r in rows.items()}
    uas = np.array([g["ua"] for g in groups.values()])
    first = next(iter(rows.values()))["ravdess"]
    targets = [t for r in rows.values() for t in r["ravdess"]["targets"]]
    probabilities = np.concatenate([np.asarray(r["ravdess"]["probabilities"]) for r in rows.values()])
    return {"groups": groups, "mean_ua": float(uas.mean()), "std_ua": float(uas.std(ddof=1)) if len(uas) > 1 else 0.0,
            "pooled_ua": ua_of(targets, probabilities, first["labels"]), "pooled_n": len(targets),
            "synthetic_mean_ua": float(np.mean([g["synthetic_ua"] for g in groups.values()]))}


def late_fusion(fusion: dict, audio: dict) -> dict:
    """Scores of the product of two heads' probabilities, from their per-group scores (same utterances, same order):
    the rule of memocmt.ensemble (the shipped model), applied to stored probabilities instead of re-scoring."""
    out = {}
    for group in fusion:
        out[group] = {}
        for name in ("ravdess", "synthetic"):
            a, b = fusion[group][name], audio[group][name]
            if a["targets"] != b["targets"]:
                raise RuntimeError(f"The two heads were scored on different {name} utterances for test actors {group}.")
            logp = np.log(np.maximum(a["probabilities"], 1e-12)) + np.log(np.maximum(b["probabilities"], 1e-12))
            probs = np.exp(logp - logp.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            picked = [a["labels"][i] for i in probs.argmax(axis=1)]
            out[group][name] = {**a, "ua": ua_of(a["targets"], probs, a["labels"]),
                                "wa": float(np.mean([p == t for p, t in zip(picked, a["targets"])])),
                                "probabilities": probs.tolist()}
    return out


def compare(rows: dict[str, dict], reference: str = "audio-only") -> dict[str, dict]:
    """Each row's UA minus the reference row's on the same pooled test utterances, with 95% paired
    bootstrap intervals (memocmt.evaluate.compare_predictions): RAVDESS resampling whole actors, the
    synthetic test resampling its utterances (each scored once per run)."""
    from memocmt.evaluate import compare_predictions

    def records(groups: dict, name: str) -> list[dict]:
        out = []
        for g in groups.values():
            s = g[name]
            picks = np.asarray(s["probabilities"]).argmax(1)
            unit = s["speakers"] if name == "ravdess" else s["ids"]
            out += [{"id": i, "speaker": u, "label": t, "predicted": s["labels"][k]}
                    for i, u, t, k in zip(s["ids"], unit, s["targets"], picks)]
        return out

    labels = next(iter(rows[reference].values()))["ravdess"]["labels"]
    return {head: {name: compare_predictions(records(groups, name), records(rows[reference], name), labels).to_dict()
                   for name in ("ravdess", "synthetic")}
            for head, groups in rows.items() if head != reference}


def markdown(result: dict) -> str:
    groups = list(next(iter(result["heads"].values()))["groups"])
    lines = ["| head | " + " | ".join(f"test {g}" for g in groups)
             + " | mean over groups (std) | all test utterances pooled | synthetic test |",
             "|---|" + "---:|" * (len(groups) + 3)]
    for head, row in result["heads"].items():
        cells = " | ".join(f"{100 * row['groups'][g]['ua']:.1f}%" for g in groups)
        lines.append(f"| {head} | {cells} | {100 * row['mean_ua']:.1f}% ({100 * row['std_ua']:.1f}) | "
                     f"{100 * row['pooled_ua']:.1f}% | {100 * row['synthetic_mean_ua']:.1f}% |")
    if result.get("against"):
        reference = result["against_reference"]
        lines += ["", f"UA minus {reference}'s on the same pooled test utterances, with the 95% paired bootstrap interval "
                  "(RAVDESS: whole actors resampled; synthetic: utterances resampled). An interval that holds 0 does "
                  "not tell the two apart.", "", "| head | RAVDESS | synthetic test |", "|---|---:|---:|"]
        for head, diff in result["against"].items():
            cells = [f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                     for d in (diff["ravdess"], diff["synthetic"])]
            lines.append(f"| {head} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RAVDESS 4-class UA with every group of four actors as the test set once.")
    parser.add_argument("--work", default="runs/default-model", help="work folder of a finished default_model.py run")
    parser.add_argument("--ravdess", default=str(REPO.parent / "shared" / "data" / "ravdess-a01-a20"),
                        help="RAVDESS root with Actor_XX folders")
    parser.add_argument("--heads", nargs="+", choices=tuple(HEADS), default=list(HEADS), help="heads to rotate")
    parser.add_argument("--without-test-actors", action="store_true",
                        help="rotate over actors 01-16 only and leave the test actors 17-20 out of every run, as "
                             "cross-validation does: a comparison of heads that may be used to choose one "
                             "(writes <work>/rotation-cv)")
    parser.add_argument("--out", help="folder for the runs and results (default: <work>/rotation, or <work>/rotation-cv "
                                      "with --without-test-actors); give another one with --set, so that runs of another "
                                      "config do not replace the recipe's")
    parser.add_argument("--voices", nargs="+", default=[], metavar="SPEC",
                        help="also score every head with test-time augmentation over these perturbed voices (e.g. "
                             "'speed 0.9' 'speed 1.1' 'pitch -200' 'pitch 200'); needs sox")
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
    try:
        args.voices = [p.spec for p in parse_perturbations(args.voices)]
    except ValueError as e:
        parser.error(str(e))
    cv_path = work / "edge-ravdess4" / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else None
    groups, left_out = (GROUPS[:-1], {f"Actor_{a:02d}" for a in GROUPS[-1]}) if args.without_test_actors else (GROUPS, set())
    out = Path(args.out) if args.out else work / ("rotation-cv" if args.without_test_actors else "rotation")
    runs = []
    for i, group in enumerate(groups):
        val = groups[i - 1][-2:]  # two actors of the previous group; train_on_val trains on them too
        manifest = build_ravdess(args.ravdess, classes="4", test_speakers=group, val_speakers=val)
        manifest = Manifest.from_items([u for u in manifest.items if u.speaker not in left_out], manifest.labels)
        path = write_manifest(out / "data" / f"ravdess4-test{group_name(group)}.jsonl", manifest, relative=False)
        for head in args.heads:
            name = f"{head}-test{group_name(group)}"
            config = load_config(REPO / "training" / "configs" / "edge-ravdess.yaml",
                                 [f"out_dir={out}", f"run_name={name}", f"manifests=[{path}, {synthetic}]", "cv_folds=0",
                                  *HEADS[head], *args.overrides])
            config = final_config(config, cv) if cv else dataclasses.replace(config, train_on_val=True)
            runs.append(RotationRun(head, group, config, out / name, synthetic, tuple(args.voices)))
    if not all(finished(r) for r in runs):
        _fill_cache(runs[0].config, [r.config.manifests[0] for r in runs if r.group == groups[0]][0])

    threads = runs[0].config.threads or 1
    workers = args.workers or cpu_workers(len(runs), threads)
    started = time.perf_counter()
    scores = map_forked(train_and_score, runs, workers, threads)
    result: dict = {"left_out_actors": sorted(left_out), "voices": args.voices, "epochs": runs[0].config.stop_epoch or runs[0].config.epochs,
                    "epochs_from": str(cv_path) if cv else "the config's schedule", "heads": {},
                    "seconds": round(time.perf_counter() - started, 1), "workers": workers, "machine": platform.platform()}
    per_head = {head: {group_name(r.group): s for r, s in zip(runs, scores) if r.head == head} for head in args.heads}
    both = set(HEADS) <= set(per_head)
    if both:
        per_head[LATE_FUSION] = late_fusion(per_head["fusion"], per_head["audio-only"])
    if args.voices:
        per_head.update({head + VOICES: {g: s["voices"] for g, s in per_head[head].items()} for head in args.heads})
        if both:
            per_head[LATE_FUSION + VOICES] = late_fusion(per_head["fusion" + VOICES], per_head["audio-only" + VOICES])
    result["heads"] = {head: summarize(rows) for head, rows in per_head.items()}
    if "audio-only" in per_head and len(per_head) > 1:
        result["against_reference"] = "audio-only"
        result["against"] = compare(per_head, "audio-only")
    result["reused_runs"] = sum(s["reused"] for s in scores)
    (out / "rotation.json").write_text(json.dumps(result, indent=2))
    (out / "rotation.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _fill_cache(config: TrainConfig, manifest_path: str) -> None:
    """Encode every RAVDESS utterance and its perturbed copies once, before the runs fork, so that no two
    workers encode the same file (the recipe itself never perturbs its test actors)."""
    from memocmt.config import preset
    from memocmt.trainer.embed_cache import EmbeddingCache
    from memocmt.manifest import read_manifest
    from memocmt.model import MemoCMT

    manifest = read_manifest(manifest_path)
    model = MemoCMT(preset(config.preset, labels=list(manifest.labels), **config.model))
    cache = EmbeddingCache(config.cache_dir, model)
    paths = [u.audio for u in manifest.items]
    cache.fill_audio(paths)
    for p in parse_perturbations(config.perturb):
        if getattr(p, "condition", None) is not None and p.condition.needs_sources:
            continue  # babble is made from each training run's own clips: encoded when that run trains
        cache.fill_audio(paths, perturbation=p)


if __name__ == "__main__":
    sys.exit(main())
