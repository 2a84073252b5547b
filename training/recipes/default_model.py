"""Reproduce the shipped default model end to end: data, embeddings, training, evaluation.

    python training/recipes/default_model.py --ravdess ../shared/data/ravdess-a01-a20 [--ship] [--ablations]

1. manifests: RAVDESS actors 01-20 (train 01-14, val 15-16, test 17-20; 4 and 8 classes) and
   the synthetic espeak-ng corpus (memocmt.synthetic, 100 utterances per class, seed 0);
2. 4-class model: training/configs/edge-ravdess.yaml (frozen encoders, cached embeddings). With
   `cv_folds` in the config (or --cv-folds K) the number of epochs (and one of the config's
   `cv_candidates`, if any) is chosen by K-fold speaker cross-validation over the train and val
   actors 01-16 (the synthetic corpus always trains), and the model is retrained on all 16 actors
   for that many epochs (memocmt.trainer.crossval; the table is <work>/edge-ravdess4/cv.md);
   without it, the best epoch on the val actors 15-16 is kept;
3. 8-class variant: training/configs/edge-ravdess8.yaml (with CV, the 4-class candidate trained for its
   whole schedule on train + val: see follow_choice);
4. evaluation of each final checkpoint on the unseen test actors and on the synthetic test voices
   (memocmt.evaluate); with --ablations also audio-only and text-only heads (same choice), the
   late fusion of the 4-class head and the audio-only one (`edge-ravdess4-late`, one checkpoint
   that multiplies their probabilities: memocmt.ensemble, reading transcripts only in the languages the
   fusion head trained on and classifying other known languages from audio: memocmt.language_policy), and the UA of the fusion head and of the
   late fusion minus each other head's on both test sets with a 95% paired bootstrap interval
   (`fusion_minus_ablation`, `late_fusion_minus`; utterances resampled within each test speaker);
5. with --ship (needs --ablations): copies the late fusion to memocmt/models/edge-ravdess/ with metrics.json.

With `--nemo ../shared/data/nemo-pl` the 4-class runs (fusion, audio-only, text-only, late fusion) train on two
corpora: RAVDESS actors 01-16 and the nEMO (Polish) actors other than KD0 and SM0, which are held out as nEMO's
test speakers exactly as training/recipes/cross_corpus.py holds them out (never used for a choice). Their
cross-validation folds draw speakers from both corpora (memocmt.trainer.crossval.speaker_folds), each epoch draws
corpora and classes evenly (`balance: corpus+class`, no class weights) and only `epoch_size` utterances
(--epoch-size; default: as many as the RAVDESS and synthetic training utterances, so an epoch costs what it costs
without nEMO rather than a pass over nEMO's 2,000 clips), and the sox voice perturbations apply to both corpora.
Every 4-class run is also scored on the nEMO test speakers (UA, WA, ECE per corpus, never pooled), and the
bootstrap differences are given per corpus. The 8-class run stays RAVDESS-only (nEMO has four of the classes).

--reuse scores the finished runs of an earlier recipe run in --work again (and builds the late
fusion from them) instead of training them anew: the way to ship from runs that a rerun on another
embedding cache would not reproduce to the bit (see the model card).

The cross-validation folds, and then the final trainings with their evaluations, run side by side
in forked worker processes (memocmt.trainer.parallel: as many as the CPU cores allow at the configs'
`threads: 1`; --workers 1 runs them one after another, with the same results). Every stage's time
goes to <work>/timings.json; stages that ran side by side overlap, and `train and evaluate (wall)`
is their wall time. Test actors are never used for selection.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memocmt.corpora import build_nemo, build_ravdess  # noqa: E402
import torch  # noqa: E402

from memocmt.trainer.crossval import calibrate_run, cross_validate, final_config, held_out_logprobs  # noqa: E402
from memocmt.evaluate import (LIVE_SPEAKER_UTTERANCES, compare_predictions, evaluate_speaker_utterances,  # noqa: E402
                              prediction_rows, write_report)
from memocmt.manifest import read_manifest, write_manifest  # noqa: E402
from memocmt.trainer.parallel import cpu_workers, map_forked  # noqa: E402
from memocmt.trainer.train import TrainConfig, load_config, train  # noqa: E402

TEST_ACTORS, VAL_ACTORS = (17, 18, 19, 20), (15, 16)
NEMO_TEST, NEMO_VAL = ("KD0", "SM0"), ("IC0", "TP0")  # as training/recipes/cross_corpus.py holds them out
# the 4-class runs with --nemo: both corpora folded and perturbed, corpora and classes drawn evenly
NEMO_OVERRIDES = ["balance=corpus+class", "class_weights=false", "cv_corpora=[ravdess, nemo]",
                  "perturb_corpora=[ravdess, nemo]"]
SHIP_DIR = REPO / "memocmt" / "models" / "edge-ravdess"
logger = logging.getLogger("memocmt")


def make_data(ravdess: Path, data_dir: Path, synthetic_per_class: int, nemo: Path | None = None) -> None:
    from memocmt.synthetic import generate_synthetic_corpus

    for classes in ("4", "8"):
        manifest = build_ravdess(ravdess, classes=classes, test_speakers=TEST_ACTORS, val_speakers=VAL_ACTORS)
        write_manifest(data_dir / f"ravdess{classes}.jsonl", manifest, relative=False)
        logger.info("RAVDESS %s classes:\n%s", classes, manifest.summary())
    if nemo is not None:
        manifest = build_nemo(nemo, test_speakers=NEMO_TEST, val_speakers=NEMO_VAL)
        write_manifest(data_dir / "nemo4.jsonl", manifest, relative=False)
        logger.info("nEMO 4 classes:\n%s", manifest.summary())
    if not (data_dir / "synthetic" / "manifest.jsonl").is_file():
        generate_synthetic_corpus(data_dir / "synthetic", n_per_class=synthetic_per_class, seed=0)


def default_epoch_size(data_dir: Path) -> int:
    """The RAVDESS (4 classes) and synthetic utterances that train (train + val): an epoch's size without nEMO."""
    return sum(len(read_manifest(p).split("train")) + len(read_manifest(p).split("val"))
               for p in (data_dir / "ravdess4.jsonl", data_dir / "synthetic" / "manifest.jsonl"))


def test_sets(data_dir: Path, classes: str) -> dict[str, Path]:
    """Test corpus -> manifest: RAVDESS and synthetic, and nEMO for 4 classes when the recipe built it (--nemo)."""
    sets = {"ravdess": data_dir / f"ravdess{classes}.jsonl", "synthetic": data_dir / "synthetic" / "manifest.jsonl"}
    if classes == "4" and (data_dir / "nemo4.jsonl").is_file():
        sets["nemo"] = data_dir / "nemo4.jsonl"
    return sets


def evaluate_run(run_dir: Path, data_dir: Path, classes: str) -> dict:
    """Final checkpoint (best on val, or the CV-chosen epoch count on train + val) scored on the RAVDESS test actors,
    the synthetic test voices and (--nemo) the nEMO test actors, each corpus on its own; a speaker-normalised model
    also with the statistics of only K utterances of each RAVDESS test speaker (`ravdess_after_K`: as live
    adaptation has them after K utterances)."""
    from memocmt.model import load_checkpoint

    model = load_checkpoint(run_dir / "best.safetensors")
    scores = {}
    sets = test_sets(data_dir, classes)
    for name, path in sets.items():
        manifest = read_manifest(path).split("test")
        ks = (0, *LIVE_SPEAKER_UTTERANCES) if model.speaker_norm and name == "ravdess" else (0,)
        results = evaluate_speaker_utterances(model, manifest, ks, batch_size=16, progress=False)  # encoded once
        report = results[0].report
        calibration = results[0].calibration
        write_report(report, run_dir / f"eval-{name}.json", title=f"{run_dir.name} on {name} test",
                     calibration=calibration, extra={"predictions": prediction_rows(results[0], manifest)})
        scores[name] = {"ua": report.ua, "wa": report.wa, "macro_f1": report.macro_f1, "n": report.n,
                        "macro_auc": report.macro_auc, "ece": calibration.ece, "nll": calibration.nll,
                        "brier": calibration.brier}
        logger.info("%s on %s test: UA %.2f%% WA %.2f%%", run_dir.name, name, 100 * report.ua, 100 * report.wa)
        for k in ks[1:]:
            report = results[k].report
            scores[f"ravdess_after_{k}"] = {"ua": report.ua, "wa": report.wa, "macro_f1": report.macro_f1, "n": report.n,
                                            "ece": results[k].calibration.ece}
            logger.info("%s on ravdess test, statistics of %d utterance(s) per speaker: UA %.2f%%", run_dir.name, k, 100 * report.ua)
    return scores


def ablation_differences(work: Path, ablations: list[str], fusion: str = "edge-ravdess4",
                         tests: tuple[str, ...] = ("ravdess", "synthetic")) -> dict:
    """The fusion head's UA minus each ablation's on both test sets, with 95% paired bootstrap intervals
    (memocmt.evaluate.compare_predictions; utterances resampled within each test speaker, as four actors
    and two synthetic voices are too few to resample whole): whether fusion is at least as good as each
    single modality beyond chance on these speakers."""
    out = {}
    for name in ablations:
        out[name] = {}
        for test in tests:
            ours, theirs = (json.loads((work / run / f"eval-{test}.json").read_text()) for run in (fusion, name))
            diff = compare_predictions(ours["predictions"], theirs["predictions"], ours["labels"])
            out[name][test] = diff.to_dict()
            logger.info("%s minus %s on %s test: UA %+.1f points [%+.1f, %+.1f]", fusion, name, test,
                        100 * diff.difference, 100 * diff.low, 100 * diff.high)
    return out


LATE = "edge-ravdess4-late"


def late_fusion(work: Path, data_dir: Path, calibrate: tuple[int, str] | None = None) -> dict:
    """The 4-class fusion head and the audio-only one as one checkpoint that multiplies their
    probabilities (<work>/edge-ravdess4-late/best.safetensors), scored as the other runs are. With
    `calibrate` (the CV's chosen epochs and candidate), the ensemble's own temperature is fitted on the
    members' held-out cross-validation predictions, each at its own temperature."""
    from memocmt.ensemble import build_ensemble, fit_ensemble_temperature
    from memocmt.model import save_checkpoint

    run_dir = work / LATE
    run_dir.mkdir(parents=True, exist_ok=True)
    names = ["edge-ravdess4", "edge-ravdess4-audio"]
    model = build_ensemble([work / n / "best.safetensors" for n in names])
    # transcripts are read in the languages the fusion head trained on; others fall back to the audio-only head
    languages = run_languages(work / names[0])
    model.config = model.config.replace(text_languages=languages)
    extra = {"ensemble_of": [f"{n}/best.safetensors" for n in names], "text_languages": languages}
    if calibrate is not None:
        epochs, candidate = calibrate
        held = [held_out_logprobs(work / n, epochs, candidate) for n in names]
        if any(len(t) != len(held[0][1]) or (t != held[0][1]).any() for _, t in held[1:]):
            raise RuntimeError("The members' cross-validations held out different utterances; rerun both.")
        temperatures = [member.temperature for member in model.head.members]
        temperature = fit_ensemble_temperature([z for z, _ in held], temperatures, held[0][1])
        model.config = model.config.replace(temperature=temperature)
        model.head.temperature = temperature
        extra["calibration"] = {"temperature": temperature, "member_temperatures": temperatures, "epochs": epochs}
        logger.info("Late fusion: member temperatures %s, ensemble temperature %.3f", temperatures, temperature)
    save_checkpoint(model, run_dir / "best.safetensors", extra=extra)
    return evaluate_run(run_dir, data_dir, "4")


def _nemo_speakers(data_dir: Path) -> list[str]:
    return [u.speaker for u in read_manifest(data_dir / "nemo4.jsonl")]


def corpora_card(nemo: bool, epoch_size: int) -> dict:
    """The corpora the 4-class model trained on, with their licences (for metrics.json and the model card)."""
    out = {"ravdess": {"language": "en", "licence": "CC BY-NC-SA 4.0",
                       "attribution": "Livingstone & Russo (2018), The Ryerson Audio-Visual Database of Emotional "
                                      "Speech and Song (RAVDESS), PLoS ONE 13(5): e0196391"},
           "synthetic": {"language": "en", "licence": "generated by memocmt.synthetic (espeak-ng voices)"}}
    if nemo:
        out["nemo"] = {"language": "pl", "licence": "CC BY-NC-SA 4.0",
                       "attribution": "Christop (2024), nEMO: Dataset of Emotional Speech in Polish, LREC-COLING 2024, "
                                      "pages 12111-12116"}
        out["sampling"] = {"balance": "corpus+class", "epoch_size": epoch_size}
    return out


def run_languages(run_dir: Path) -> list[str]:
    """The languages of the utterances a run trained on (train and val of its manifests; memocmt.language_policy)."""
    import yaml

    from memocmt.language_policy import trained_languages

    manifests = yaml.safe_load((run_dir / "train_config.yaml").read_text())["manifests"]
    return trained_languages(u.language for path in manifests for u in read_manifest(path) if u.split in ("train", "val"))


def follow_choice(config: TrainConfig, cv: dict, *, same_classes: bool) -> TrainConfig:
    """The final config of a run that follows the 4-class CV: its candidate, trained on train + val, for the
    chosen number of epochs; a run with other classes (8) trains its whole schedule instead.

    Measured: the 8-class config's own 4-fold CV over actors 01-16 (one-off, the recipe's cache) rose to
    the end of its 15-epoch schedule (mean UA 76.2% at 9 epochs, 79.2% at 14, 78.9% at 15) while the
    4-class CV chose 9, so the 4-class epoch count does not carry over to 8 classes.
    """
    final = final_config(config, cv)
    return final if same_classes else dataclasses.replace(final, stop_epoch=0)


@dataclasses.dataclass
class RecipeRun:
    name: str
    config: TrainConfig  # final: after CV, the chosen candidate and epoch count on train + val
    run_dir: Path
    data_dir: Path
    classes: str
    calibrate: tuple[int, str] | None = None  # (epochs, candidate) of this run's own CV to fit its temperature on


def train_and_evaluate(run: RecipeRun) -> dict:
    """One run's training, calibration and evaluation (in a worker process when runs go side by side)."""
    started = time.perf_counter()
    train(run.config, run.run_dir, progress=False)
    if run.calibrate is not None:
        calibrate_run(run.run_dir, *run.calibrate)
    trained = time.perf_counter()
    scores = evaluate_run(run.run_dir, run.data_dir, run.classes)
    return {"scores": scores, "train_s": round(trained - started, 1), "evaluate_s": round(time.perf_counter() - trained, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the shipped edge-ravdess model end to end.")
    parser.add_argument("--ravdess", default=str(REPO.parent / "shared" / "data" / "ravdess-a01-a20"), help="RAVDESS root")
    parser.add_argument("--work", default="runs/default-model", help="work folder (data, runs, timings)")
    parser.add_argument("--nemo", metavar="DIR",
                        help="nEMO root (data.tsv, samples/): the 4-class runs also train on its actors other than "
                             "KD0 and SM0 and are scored on those two (off by default)")
    parser.add_argument("--epoch-size", type=int, default=0, metavar="N",
                        help="with --nemo: utterances drawn per epoch (default: as many as the RAVDESS and synthetic "
                             "training utterances)")
    parser.add_argument("--synthetic-per-class", type=int, default=100, help="synthetic utterances per class")
    parser.add_argument("--skip-8class", action="store_true", help="train only the 4-class model")
    parser.add_argument("--ablations", action="store_true", help="also train audio-only and text-only 4-class heads")
    parser.add_argument("--ship", action="store_true",
                        help="copy the 4-class late fusion (needs --ablations) into memocmt/models/edge-ravdess/")
    parser.add_argument("--reuse", action="store_true",
                        help="score the finished runs in --work again instead of retraining them (selection and "
                             "training times are taken from its timings.json)")
    parser.add_argument("--cv-folds", type=int, metavar="K",
                        help="speaker cross-validation folds for choosing the epochs (default: the config's cv_folds; 0: "
                             "best epoch on the val actors)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="runs trained side by side after cross-validation, each in its own process (default: as "
                             "many as the CPU cores allow at the config's `threads`; 1: one after another)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override applied to every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not Path(args.ravdess).is_dir():
        parser.error(f"--ravdess {args.ravdess} is not a directory.")
    if args.nemo is not None and not (Path(args.nemo) / "data.tsv").is_file():
        parser.error(f"--nemo {args.nemo} is not an nEMO folder (no data.tsv in it).")
    if args.epoch_size < 0 or (args.epoch_size and args.nemo is None):
        parser.error("--epoch-size needs --nemo and must be a positive number of utterances.")
    if args.ship and not args.ablations:
        parser.error("--ship needs --ablations: the shipped model is the late fusion of the 4-class head and the "
                     "audio-only one.")
    work = Path(args.work)
    previous = {}
    if args.reuse:
        if not (work / "timings.json").is_file():
            parser.error(f"--reuse needs a finished recipe run in {work} (no timings.json there).")
        previous = json.loads((work / "timings.json").read_text())
    data_dir = work / "data"
    timings: dict[str, float | None] = {}
    results: dict[str, dict] = {}
    started = time.perf_counter()

    def timed(stage: str, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        timings[stage] = round(time.perf_counter() - t, 1)
        return out

    timed("data", make_data, Path(args.ravdess), data_dir, args.synthetic_per_class,
          Path(args.nemo) if args.nemo else None)
    if args.nemo is None:
        (data_dir / "nemo4.jsonl").unlink(missing_ok=True)  # a RAVDESS-only run in a folder an earlier --nemo used
    epoch_size = (args.epoch_size or default_epoch_size(data_dir)) if args.nemo else 0
    runs = {"edge-ravdess4": ("training/configs/edge-ravdess.yaml", "4", [])}
    if not args.skip_8class:
        runs["edge-ravdess8"] = ("training/configs/edge-ravdess8.yaml", "8", [])
    if args.ablations:
        runs["edge-ravdess4-audio"] = ("training/configs/edge-ravdess.yaml", "4", ["model.modalities=audio", "run_name=edge-ravdess4-audio"])
        runs["edge-ravdess4-text"] = ("training/configs/edge-ravdess.yaml", "4", ["model.modalities=text", "run_name=edge-ravdess4-text"])
    jobs = []
    for name, (config_path, classes, extra) in runs.items():
        nemo = args.nemo is not None and classes == "4"
        manifests = f"[{data_dir / f'ravdess{classes}.jsonl'}, {data_dir / 'synthetic' / 'manifest.jsonl'}" + \
            (f", {data_dir / 'nemo4.jsonl'}]" if nemo else "]")
        if nemo:
            extra = [*NEMO_OVERRIDES, f"epoch_size={epoch_size}", *extra]
        cv_override = [] if args.cv_folds is None else [f"cv_folds={args.cv_folds}"]
        config = load_config(REPO / config_path, [f"out_dir={work}", f"run_name={name}", f"manifests={manifests}",
                                                  *extra, *cv_override, *args.overrides])
        run_dir = work / name
        if args.reuse:
            if not (run_dir / "best.safetensors").is_file():
                parser.error(f"--reuse: {run_dir} has no finished run (best.safetensors); run without --reuse.")
        elif run_dir.exists():
            shutil.rmtree(run_dir)  # a fresh run; use memocmt-train --resume to continue one instead
        jobs.append(RecipeRun(name, config, run_dir, data_dir, classes))
    cv = None
    if args.reuse:
        logger.info("Scoring the finished runs in %s again (--reuse)", work)
        if (jobs[0].run_dir / "cv.json").is_file():  # the earlier choice: the late fusion is calibrated with it again
            cv = json.loads((jobs[0].run_dir / "cv.json").read_text())
        for job in jobs:
            results[job.name] = timed(f"evaluate {job.name}", evaluate_run, job.run_dir, data_dir, job.classes)
            timings[f"train {job.name}"] = previous.get("timings_s", {}).get(f"train {job.name}")
    else:
        if jobs[0].config.cv_folds:  # the first run (4 classes, fusion) makes the choice; the others follow it
            cv = timed(f"cross-validate {jobs[0].name}", cross_validate, jobs[0].config, jobs[0].run_dir, progress=False)
            # The audio-only head's own CV gives only its held-out predictions, for its temperature (and the
            # late fusion's); its epochs follow the fusion head's choice like every other run's.
            audio = next((j for j in jobs if j.name == "edge-ravdess4-audio" and j.config.cv_folds), None)
            if audio is not None:
                timed(f"cross-validate {audio.name}", cross_validate, audio.config, audio.run_dir, progress=False)
            choice = (cv["chosen"]["epochs"], cv["chosen"]["candidate"])
            jobs = [dataclasses.replace(j, config=follow_choice(j.config, cv, same_classes=j.classes == jobs[0].classes),
                                        calibrate=choice if j in (jobs[0], audio) else None)
                    if j.config.cv_folds else j for j in jobs]
        threads = jobs[0].config.threads or torch.get_num_threads()
        workers = args.workers or cpu_workers(len(jobs), threads)
        logger.info("Training and evaluating %d run(s), %d at a time", len(jobs), workers)
        t = time.perf_counter()
        for job, outcome in zip(jobs, map_forked(train_and_evaluate, jobs, workers, threads)):
            results[job.name] = outcome["scores"]
            timings[f"train {job.name}"], timings[f"evaluate {job.name}"] = outcome["train_s"], outcome["evaluate_s"]
        timings["train and evaluate (wall)"] = round(time.perf_counter() - t, 1)
    ablations = [j.name for j in jobs if j.name.startswith("edge-ravdess4-")]
    tests = tuple(test_sets(data_dir, "4"))
    against = ablation_differences(work, ablations, tests=tests)
    late_against = {}
    if "edge-ravdess4-audio" in ablations:
        choice = (cv["chosen"]["epochs"], cv["chosen"]["candidate"]) if cv is not None else None
        results[LATE] = timed(f"late fusion {LATE}", late_fusion, work, data_dir, choice)
        late_against = ablation_differences(work, ["edge-ravdess4", *ablations], fusion=LATE, tests=tests)
    timings["total"] = round(time.perf_counter() - started, 1)
    summary = {"results": results, **({"fusion_minus_ablation": against} if against else {}),
               **({"late_fusion_minus": late_against} if late_against else {}),
               "timings_s": timings, "machine": platform.platform(),
               "split": "RAVDESS train actors 01-14, val 15-16, test 17-20 (never used for a choice); synthetic split by "
                        "voice and sentence" + (f"; nEMO (4-class runs) train {', '.join(sorted(set(_nemo_speakers(data_dir)) - set(NEMO_TEST + NEMO_VAL)))}, "
                                                f"val {', '.join(NEMO_VAL)}, test {', '.join(NEMO_TEST)} (never used for a "
                                                "choice)" if args.nemo else ""),
               "corpora": corpora_card(bool(args.nemo), epoch_size)}
    if args.reuse:
        summary["reused_runs"] = {"from": str(work), "note": "finished runs scored again; train times and selection "
                                                             "are those of the run that trained them"}
        summary["selection"] = previous.get("selection", {"method": "unknown (not in the earlier timings.json)"})
    elif cv is not None:
        pool = "RAVDESS actors 01-16 and nEMO actors other than " + " and ".join(NEMO_TEST) if args.nemo else \
            "RAVDESS actors 01-16"
        summary["selection"] = {"method": f"{len(cv['folds'])}-fold speaker cross-validation over {pool} "
                                          f"(synthetic train+val always in training); retrained on {pool}",
                                "folds": cv["folds"], "chosen": cv["chosen"],
                                "candidates": {n: {k: c[k] for k in ("overrides", "epochs", "best_epoch", "best_mean_ua",
                                                                     "best_fold_ua", "last_mean_ua")}
                                               for n, c in cv["candidates"].items()},
                                "seconds": cv["seconds"]}
    else:
        summary["selection"] = {"method": "best epoch on the val actors 15-16"}
    (work / "timings.json").write_text(json.dumps(summary, indent=2))
    if args.ship:
        SHIP_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / LATE / "best.safetensors", SHIP_DIR / "model.safetensors")
        (SHIP_DIR / "metrics.json").write_text(json.dumps(summary, indent=2))
        if "edge-ravdess8" in runs:
            shutil.copy(work / "edge-ravdess8" / "best.safetensors", work / "edge-ravdess8.safetensors")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
