"""Accuracy beside latency: UA/WA of every variant on speaker-held-out speech, and the floors.

* RAVDESS 4 classes, test actors 17-20: the actors the shipped model never saw in training or
  model selection (training/configs/edge-ravdess.yaml: train 01-14, validation 15-16);
* the synthetic espeak-ng corpus's test split (unseen voices and sentences), seed 0 with 100
  utterances per class as in training/recipes/default_model.py;
* floors: the linear-probe and eGeMAPS logistic regressions of benchmarks/baselines.py on the
  same RAVDESS split, cached by the baselines code and the file list.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

logger = logging.getLogger("memocmt")

TEST_ACTORS, VAL_ACTORS = (17, 18, 19, 20), (15, 16)
SYNTHETIC_PER_CLASS, SYNTHETIC_SEED = 100, 0
SPLIT_NOTE = "RAVDESS 4-class, train actors 01-14, val 15-16, test 17-20 (never seen); synthetic test voices/sentences"


def ravdess_split(root: Path):
    from memocmt.corpora import build_ravdess

    return build_ravdess(root, classes="4", split="speaker", test_speakers=TEST_ACTORS, val_speakers=VAL_ACTORS)


def ravdess_test(root: Path):
    return ravdess_split(root).split("test")


def ravdess_manifest(root: Path, folder: Path) -> Path:
    """The speaker split written as a JSONL manifest (int8 calibration and agreement for the edge export)."""
    from memocmt.manifest import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    return write_manifest(folder / "ravdess4-speaker.jsonl", ravdess_split(root), relative=False)


def synthetic_test(folder: Path):
    """The synthetic corpus's test split, generated into `folder` when it is not there yet."""
    from memocmt.manifest import read_manifest

    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        from memocmt.synthetic import generate_synthetic_corpus

        logger.info("Generating the synthetic corpus in %s", folder)
        generate_synthetic_corpus(folder, n_per_class=SYNTHETIC_PER_CLASS, seed=SYNTHETIC_SEED)
    return read_manifest(manifest).split("test")


def subsample(manifest, limit: int | None):
    """A seeded random sample in manifest order, so a small sample still spans classes and speakers."""
    import numpy as np

    from memocmt.manifest import Manifest

    if not limit or len(manifest) <= limit:
        return manifest
    keep = np.sort(np.random.default_rng(0).choice(len(manifest), size=limit, replace=False))
    items = [manifest.items[int(i)] for i in keep]
    return Manifest.from_items(items, manifest.labels, manifest.source)


def write_result(folder: Path, name: str, result: dict, markdown: str) -> None:
    """A standalone benchmark's result as <folder>/<name>.json and .md, and the markdown printed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2))
    (folder / f"{name}.md").write_text(markdown)
    print(markdown)


def evaluate_variants(runners: dict, sets: dict, reference: str | None = None) -> dict:
    """UA, WA, macro-F1 and (vs the reference variant) prediction agreement, per variant and set; a
    speaker-normalised variant also on RAVDESS with each speaker's statistics from K of its utterances
    and the prior (`ravdess_after_K`), as live adaptation has them after K utterances."""
    from memocmt.evaluate import LIVE_SPEAKER_UTTERANCES, align_labels, evaluate_speaker_utterances

    out: dict = {name: {} for name in runners}
    predictions: dict = {}
    for set_name, manifest in sets.items():
        for name, runner in runners.items():
            aligned = align_labels(manifest, runner.labels)
            live = set_name == "ravdess" and getattr(runner, "speaker_norm", "")  # also statistics of K utterances
            results = evaluate_speaker_utterances(runner, aligned, (0, *LIVE_SPEAKER_UTTERANCES) if live else (0,),
                                                  batch_size=8, on_bad_file="stop", progress=False)
            for k, result in results.items():
                r = result.report
                out[name][f"ravdess_after_{k}" if k else set_name] = {"ua": r.ua, "wa": r.wa, "macro_f1": r.macro_f1, "n": r.n}
            predictions[name, set_name] = {uid: pred for uid, _, pred in results[0].predictions}
        if reference in runners:
            ref = predictions[reference, set_name]
            for name in runners:
                ours = predictions[name, set_name]
                out[name][set_name]["agreement_with_reference"] = sum(ours[k] == ref.get(k) for k in ours) / max(1, len(ours))
    return out


def _floors_key(root: Path) -> str:
    h = hashlib.sha256()
    h.update((Path(__file__).resolve().parent / "baselines.py").read_bytes())
    for p in sorted(list(root.glob("Actor_*/*.wav")) + list(root.glob("Actor_*/*.flac"))):
        h.update(p.name.encode())
    return h.hexdigest()[:16]


def floors(root: Path, embedding_cache: Path, cache_dir: Path) -> dict:
    """Linear-probe and eGeMAPS test UA/WA on the RAVDESS 4-class split (cached)."""
    try:
        from benchmarks import baselines
    except ImportError as e:
        return {"error": f"benchmarks/baselines.py is not available: {e}"}
    if tuple(baselines.TEST_ACTORS) != TEST_ACTORS or tuple(baselines.VAL_ACTORS) != VAL_ACTORS:
        return {"error": "benchmarks/baselines.py uses another actor split; floors would not be comparable"}
    cache = cache_dir / f"floors-{_floors_key(root)}.json"
    if cache.is_file() and "probe-all-speaker" in (cached := json.loads(cache.read_text())):
        return cached
    logger.info("Fitting the linear-probe and eGeMAPS floors (cached in %s)", cache)
    results = baselines.run(root, ["4"], embedding_cache)["ravdess-4"]
    out = {name: {"ua": r["test_ua"], "wa": r["test_wa"], "macro_f1": r["test_macro_f1"], "dims": r["dims"]}
           for name, r in results.items() if name != "counts"}
    out["counts"] = results.get("counts")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=2))
    return out
