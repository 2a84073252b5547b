"""Cross-corpus protocol: RAVDESS (English) and nEMO (Polish), each corpus left out, and both mixed.

    python training/recipes/cross_corpus.py --ravdess ../shared/data/ravdess-a01-a20 --nemo ../shared/data/nemo-pl

Trainings of the 4-class head (training/configs/edge-ravdess.yaml, frozen encoders, cached
embeddings; no cross-validation: the best epoch on the validation speakers is kept):

- `ravdess-only`: RAVDESS actors 01-14, validation 15-16. Leave-one-corpus-out for nEMO.
- `nemo-only`: nEMO actors EB0, KS0, MK0, MP0, WR0, validation IC0, TP0. Leave-one-corpus-out for RAVDESS.
- `mixed`: both training sets (one manifest merged from the two), validation speakers of both.
- `mixed-audio`, `ravdess-only-audio`: the same as `mixed` and `ravdess-only` with the audio branch only
  (`model.modalities=audio`): what the text encoder (MiniLM, trained on English) adds on each language.

Every run samples with `balance: corpus+class` (each epoch draws corpora and classes evenly, so the
2,000 nEMO clips do not drown RAVDESS's 400; with one corpus that is a class balance) instead of
the config's class-weighted loss, draws `epoch_size` utterances per epoch (--epoch-size; default as
many as RAVDESS has training utterances, so every run's epoch costs what a RAVDESS-only epoch costs
rather than a pass over nEMO's 1,600 training clips and their perturbed copies), keeps the config's
speaker statistics, and applies its sox voice perturbations to the training utterances of every
corpus it trains on. --epochs shortens the schedule (default: the config's 15).

Each run is scored on the held-out speakers of both corpora, which no run trains or selects on:
RAVDESS actors 17-20 and nEMO actors KD0 (female) and SM0 (male). Per test corpus, never pooled:
UA, WA, n and the expected calibration error (15 equal-width confidence bins); then the mixed run's
UA minus each single-corpus run's on the same utterances with a 95% paired bootstrap interval
(memocmt.evaluate.compare_predictions: whole speakers resampled, or, with fewer than the bootstrap's
minimum of speakers, utterances within each speaker: the interval then speaks for these speakers),
and each fusion run's UA minus its audio-only twin's (`text_contribution`, the same intervals).
Writes <out>/cross_corpus.json and cross_corpus.md (default benchmarks/results/cross_corpus/).

Scoring reads the test clips' encoder states from the embedding cache (filled once before the runs fork)
rather than encoding every clip again for every run; the frozen encoders are the same, so only the
cache's float16 rounding differs from memocmt.evaluate.

Runs go side by side in forked workers (memocmt.trainer.parallel); a run folder that already holds a finished
run of the same config is reused, so an interrupted protocol continues and a rerun only scores.
`--set key=value` overrides every run's config (e.g. `--set preset=edge-base` for the Whisper base
encoder, `--set perturb=[]` to train without perturbed voices).
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

from memocmt.corpora import build_nemo, build_ravdess  # noqa: E402
from memocmt.manifest import merge_manifests, read_manifest, write_manifest  # noqa: E402
from memocmt.perturb import Acoustic, parse_perturbations  # noqa: E402
from memocmt.trainer.parallel import cpu_workers, map_forked  # noqa: E402
from memocmt.trainer.train import TrainConfig, load_config, train  # noqa: E402

RAVDESS_TEST, RAVDESS_VAL = (17, 18, 19, 20), (15, 16)
NEMO_TEST, NEMO_VAL = ("KD0", "SM0"), ("IC0", "TP0")
CONFIG = REPO / "training" / "configs" / "edge-ravdess.yaml"
# every run: no CV (the best validation epoch is kept), corpora and classes drawn evenly, both corpora perturbed
PROTOCOL = ["cv_folds=0", "cv_corpora=[]", "balance=corpus+class", "class_weights=false"]
TESTS = ("ravdess", "nemo")
REFERENCE = "mixed"
TRAINS = {"ravdess-only": ("ravdess",), "nemo-only": ("nemo",), "mixed": ("ravdess", "nemo"),
          "mixed-audio": ("ravdess", "nemo"), "ravdess-only-audio": ("ravdess",)}
AUDIO_ONLY = {"mixed-audio": "mixed", "ravdess-only-audio": "ravdess-only"}  # audio-only run -> its fusion twin
ECE_BINS = 15
logger = logging.getLogger("memocmt")


@dataclasses.dataclass
class Run:
    name: str
    trains_on: tuple[str, ...]  # corpora in its training manifest
    config: TrainConfig
    run_dir: Path
    tests: dict[str, str]  # test corpus -> manifest whose test split is scored


def make_data(ravdess: Path, nemo: Path, data_dir: Path, nemo_test: tuple[str, ...], nemo_val: tuple[str, ...]) -> dict[str, Path]:
    """The RAVDESS and nEMO manifests (speaker splits) and their merge."""
    r = build_ravdess(ravdess, classes="4", test_speakers=RAVDESS_TEST, val_speakers=RAVDESS_VAL)
    n = build_nemo(nemo, test_speakers=list(nemo_test), val_speakers=list(nemo_val))
    paths = {"ravdess": write_manifest(data_dir / "ravdess4.jsonl", r, relative=False),
             "nemo": write_manifest(data_dir / "nemo4.jsonl", n, relative=False)}
    paths["mixed"] = write_manifest(data_dir / "ravdess4+nemo4.jsonl", merge_manifests([r, n], ["ravdess", "nemo"]),
                                    relative=False)
    for name, m in (("RAVDESS", r), ("nEMO", n)):
        logger.info("%s:\n%s", name, m.summary())
    return paths


def finished(run: Run) -> bool:
    """Whether the run folder holds a finished training run of exactly this config."""
    import yaml

    config_file, metrics = run.run_dir / "train_config.yaml", run.run_dir / "metrics.jsonl"
    if not ((run.run_dir / "best.safetensors").is_file() and config_file.is_file() and metrics.is_file()):
        return False
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    last = json.loads(lines[-1])["epoch"] if lines else 0
    return yaml.safe_load(config_file.read_text()) == dataclasses.asdict(run.config) and \
        last == (run.config.stop_epoch or run.config.epochs)


def expected_calibration_error(probabilities: np.ndarray, targets: list[int], bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by the bins' shares."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence, picked = probabilities.max(axis=1), probabilities.argmax(axis=1)
    correct = picked == np.asarray(targets)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    return float(sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
                     for b in range(bins) if np.any(which == b)))


def score_cached(model, test, cache_dir: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Targets, probabilities and prediction rows of a frozen-encoder model on `test`, from the embedding cache
    (the states training used; the test clips were encoded once by fill_cache) instead of encoding every clip
    again for every run. A speaker-normalised head gets each test speaker's statistics over all of that
    speaker's test utterances, as memocmt.evaluate gives them."""
    import torch

    from memocmt.manifest import Manifest
    from memocmt.trainer.embed_cache import EmbeddingCache, attach_speaker_stats, embed_manifest
    from memocmt.trainer.train import CachedDataset, collate_cached, predict

    labels = list(model.config.labels)
    split = embed_manifest(EmbeddingCache(cache_dir, model), Manifest.from_items(test.items, labels), on_bad_file="stop",
                           progress=False)
    if model.head.speaker_norm:
        attach_speaker_stats([split])
    loader = torch.utils.data.DataLoader(CachedDataset(split), batch_size=16, collate_fn=collate_cached)
    targets, probabilities = predict(model.head, loader, torch.device("cpu"))
    rows = [{"id": i, "speaker": spk[1] if spk else "", "label": labels[t], "predicted": labels[int(p.argmax())]}
            for i, spk, t, p in zip(split.ids, split.speakers, targets, probabilities)]
    return targets, probabilities, rows


def train_and_score(run: Run) -> dict:
    """Train the run (unless a finished one is there) and score its best checkpoint on every test corpus."""
    from memocmt.manifest import read_manifest
    from memocmt.metrics import classification_report
    from memocmt.model import load_checkpoint

    started = time.perf_counter()
    reused = finished(run)
    if not reused:
        train(run.config, run.run_dir, progress=False)
    model = load_checkpoint(run.run_dir / "best.safetensors")
    labels = list(model.config.labels)
    scores = {}
    for corpus, path in run.tests.items():
        targets, probabilities, rows = score_cached(model, read_manifest(path).split("test"), run.config.cache_dir)
        report = classification_report(targets, probabilities.argmax(1), labels, probabilities)
        scores[corpus] = {"ua": report.ua, "wa": report.wa, "n": report.n, "labels": labels,
                          "ece": expected_calibration_error(probabilities, list(targets)), "rows": rows}
        logger.info("%s on %s test speakers: UA %.2f%%, ECE %.3f", run.name, corpus, 100 * report.ua, scores[corpus]["ece"])
    return {"scores": scores, "reused": reused, "seconds": round(time.perf_counter() - started, 1)}


def compare_to(results: dict[str, dict], reference: str) -> dict:
    """The reference run's UA minus each single-corpus run's, per test corpus, with 95% paired bootstrap intervals."""
    from memocmt.evaluate import compare_predictions

    out = {}
    for name, result in results.items():
        if name == reference or name in AUDIO_ONLY:
            continue
        out[name] = {}
        for corpus, s in result["scores"].items():
            ref = results[reference]["scores"][corpus]
            out[name][corpus] = compare_predictions(ref["rows"], s["rows"], s["labels"]).to_dict()
    return out


def text_contribution(results: dict[str, dict]) -> dict:
    """Each fusion run's UA minus its audio-only twin's, per test corpus (paired, 95% bootstrap): what the
    text branch adds, or costs, on each language."""
    from memocmt.evaluate import compare_predictions

    out = {}
    for audio, fusion in AUDIO_ONLY.items():
        if audio in results and fusion in results:
            out[fusion] = {corpus: compare_predictions(s["rows"], results[audio]["scores"][corpus]["rows"],
                                                       s["labels"]).to_dict()
                           for corpus, s in results[fusion]["scores"].items()}
    return out


def _interval(d: dict) -> str:
    return f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def markdown(result: dict) -> str:
    lines = ["| run | trains on | " + " | ".join(f"{c} test UA | WA (n) | {c} ECE" for c in TESTS) + " |",
             "|---|---|" + "---:|---:|---:|" * len(TESTS)]
    for name, row in result["runs"].items():
        cells = " | ".join(f"{100 * row[c]['ua']:.1f}% | {100 * row[c]['wa']:.1f}% ({row[c]['n']}) | {row[c]['ece']:.3f}"
                           for c in TESTS)
        lines.append(f"| {name} | {' + '.join(row['trains_on'])}{' (audio only)' if name in AUDIO_ONLY else ''} | {cells} |")
    if result["against_mixed"]:
        lines += ["", f"The {REFERENCE} run's UA minus each single-corpus run's on the same test utterances, in points, with "
                  "the 95% paired bootstrap interval (resampled as `resampled` says in the JSON). An interval that holds 0 "
                  "does not tell the two apart.", "",
                  "| mixed minus | " + " | ".join(f"{c} test" for c in TESTS) + " |", "|---|" + "---:|" * len(TESTS)]
        for name, diff in result["against_mixed"].items():
            lines.append(f"| {name} | " + " | ".join(_interval(diff[c]) for c in TESTS) + " |")
    if result.get("text_contribution"):
        lines += ["", "Fusion (audio + text) UA minus the same run's audio-only twin's, in points (95% paired bootstrap): "
                  "what the English text encoder adds on each language.", "",
                  "| fusion run minus audio only | " + " | ".join(f"{c} test" for c in TESTS) + " |",
                  "|---|" + "---:|" * len(TESTS)]
        for name, diff in result["text_contribution"].items():
            lines.append(f"| {name} | " + " | ".join(_interval(diff[c]) for c in TESTS) + " |")
    lines += ["", f"Test speakers: RAVDESS {', '.join(result['test_speakers']['ravdess'])}; nEMO "
              f"{', '.join(result['test_speakers']['nemo'])}. Audio encoder {result['audio_encoder']}, "
              f"{result['epochs']} epochs of {result['epoch_size']} draws (best validation epoch kept), perturbations: "
              f"{', '.join(result['perturb']) or 'none'}. {result['seconds']:.0f} s wall on {result['machine']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Leave-one-corpus-out and mixed training on RAVDESS and nEMO, scored per corpus.")
    data = REPO.parent / "shared" / "data"
    parser.add_argument("--ravdess", default=str(data / "ravdess-a01-a20"), help="RAVDESS root with Actor_XX folders")
    parser.add_argument("--nemo", default=str(data / "nemo-pl"), help="nEMO root with data.tsv and samples/")
    parser.add_argument("--work", default="runs/cross-corpus", help="folder for manifests and run folders")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cross_corpus"), help="folder for the results")
    parser.add_argument("--nemo-test-speakers", default=",".join(NEMO_TEST), help="held-out nEMO actors (default KD0,SM0)")
    parser.add_argument("--nemo-val-speakers", default=",".join(NEMO_VAL), help="nEMO validation actors (default IC0,TP0)")
    parser.add_argument("--runs", nargs="+", choices=tuple(TRAINS), default=list(TRAINS),
                        help="runs to train and score (mixed is compared with the others when it is among them)")
    parser.add_argument("--epoch-size", type=int, default=0, metavar="N",
                        help="utterances drawn per training epoch (default: as many as RAVDESS's training utterances)")
    parser.add_argument("--epochs", type=int, default=0, metavar="N", help="epochs per run (default: the config's)")
    parser.add_argument("--workers", type=int, default=0, help="runs side by side (0: as many as the CPU cores allow)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override applied to every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for flag, path in (("--ravdess", args.ravdess), ("--nemo", args.nemo)):
        if not Path(path).is_dir():
            parser.error(f"{flag} {path} is not a directory.")
    if args.epoch_size < 0 or args.epochs < 0:
        parser.error("--epoch-size and --epochs must be positive numbers (or 0 for their defaults).")
    nemo_test, nemo_val = (tuple(s.strip() for s in text.split(",") if s.strip())
                           for text in (args.nemo_test_speakers, args.nemo_val_speakers))
    work, out = Path(args.work).resolve(), Path(args.out)
    started = time.perf_counter()
    paths = make_data(Path(args.ravdess), Path(args.nemo), work / "data", nemo_test, nemo_val)
    trains = TRAINS
    epoch_size = args.epoch_size or len(read_manifest(paths["ravdess"]).split("train"))
    runs = []
    for name in dict.fromkeys(args.runs):
        manifest = paths["mixed"] if len(trains[name]) > 1 else paths[trains[name][0]]
        config = load_config(CONFIG, [f"out_dir={work}", f"run_name={name}", f"manifests=[{manifest}]", *PROTOCOL,
                                      f"epoch_size={epoch_size}", *([f"epochs={args.epochs}"] if args.epochs else []),
                                      *(["model.modalities=audio"] if name in AUDIO_ONLY else []),
                                      f"perturb_corpora=[{', '.join(trains[name])}]", *args.overrides])
        runs.append(Run(name, trains[name], config, work / name, {c: str(paths[c]) for c in TESTS}))
    if not all(finished(r) for r in runs):
        fill_cache(runs, paths["mixed"])
    threads = runs[0].config.threads or 1
    workers = args.workers or cpu_workers(len(runs), threads)
    scored = dict(zip((r.name for r in runs), map_forked(train_and_score, runs, workers, threads)))
    config = runs[0].config
    result = {
        "runs": {name: {"trains_on": list(trains[name]), **{c: {k: v for k, v in s.items() if k != "rows"}
                                                            for c, s in r["scores"].items()}, "seconds": r["seconds"]}
                 for name, r in scored.items()},
        "against_mixed": compare_to(scored, REFERENCE) if REFERENCE in scored else {},
        "text_contribution": text_contribution(scored),
        "test_speakers": {"ravdess": [f"Actor_{a:02d}" for a in RAVDESS_TEST], "nemo": list(nemo_test)},
        "val_speakers": {"ravdess": [f"Actor_{a:02d}" for a in RAVDESS_VAL], "nemo": list(nemo_val)},
        "audio_encoder": _audio_encoder(config), "epochs": config.stop_epoch or config.epochs, "epoch_size": config.epoch_size,
        "perturb": config.perturb,
        "balance": config.balance, "overrides": args.overrides, "reused_runs": sum(r["reused"] for r in scored.values()),
        "workers": workers, "seconds": round(time.perf_counter() - started, 1), "machine": platform.platform(),
        "command": "python training/recipes/cross_corpus.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_corpus.json").write_text(json.dumps(result, indent=2))
    (out / "cross_corpus.md").write_text(markdown(result))
    for name, r in scored.items():  # the predictions, for later comparisons on the same utterances
        (out / f"predictions-{name}.json").write_text(json.dumps({c: s["rows"] for c, s in r["scores"].items()}))
    print(markdown(result))
    return 0


def _audio_encoder(config: TrainConfig) -> str:
    from memocmt.config import preset

    return preset(config.preset, **config.model).audio_encoder


def fill_cache(runs: list[Run], manifest_path: Path) -> None:
    """Encode every utterance of both corpora, and the perturbed copies the runs train on, once before the
    runs fork, so that no two workers encode the same file."""
    from memocmt.config import preset
    from memocmt.trainer.embed_cache import EmbeddingCache
    from memocmt.manifest import read_manifest
    from memocmt.model import MemoCMT

    config = runs[0].config
    manifest = read_manifest(manifest_path)
    model = MemoCMT(preset(config.preset, labels=list(manifest.labels), **config.model))
    cache = EmbeddingCache(config.cache_dir, model)
    cache.fill_audio([u.audio for u in manifest.items])
    perturbed = {c for r in runs for c in r.config.perturb_corpora}
    train_audio = [u.audio for u in manifest.split("train").items if u.corpus in perturbed]
    clips = [str(a) for a in train_audio]  # babble is made from the training clips, as memocmt.trainer.train does
    for p in parse_perturbations(config.perturb):
        cache.fill_audio(train_audio, perturbation=p.with_sources(clips) if isinstance(p, Acoustic) else p)


if __name__ == "__main__":
    sys.exit(main())
