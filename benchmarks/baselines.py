"""Speaker-independent floors for RAVDESS: linear probes and eGeMAPS, each + logistic regression.

    python benchmarks/baselines.py --ravdess ../shared/data/ravdess-a01-a20 --out runs/baselines.json

Same split as the shipped model: train actors 01-14, validation 15-16 (used only to pick the
regularisation strength C), test 17-20. Features:

* probe-all:  frozen Whisper tiny.en encoder (or --audio-encoder), mean and std over time of every layer (3840-d);
* probe-last: the same, last layer only (768-d);
* probe-all-speaker: probe-all with each actor's mean feature vector subtracted, the mean taken
  over all of that actor's recordings (every emotion, no labels): speaker normalisation, as the
  shipped model uses it (memocmt.speaker_norm), so this is the probe to compare it with;
* probe-all-speaker-std: probe-all on states standardised per layer and dimension by each actor's
  mean and variance over all of its recordings: the shipped head's `speaker_norm: mean+std`;
* egemaps:    openSMILE eGeMAPSv02 functionals (88-d), the standard hand-crafted set;
* probe-all-speaker-std+egemaps: probe-all-speaker-std beside eGeMAPS z-scored per actor (each
  functional standardised on the actor's recordings of the task): do hand-crafted prosody features
  add to the encoder states? (Measured: no; 77.3% against 78.1% at 4 classes, 70.5% against 69.7% at 8.)

Encoder states come from the training embedding cache, so this reuses what training computed.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("memocmt")

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
TEST_ACTORS, VAL_ACTORS = (17, 18, 19, 20), (15, 16)


def probe_features(states, layers: str) -> np.ndarray:
    """(L, T, D) states -> mean and std over time of every layer, or of the last one."""
    x = states.float().numpy()
    if layers == "last":
        x = x[-1:]
    return np.concatenate([x.mean(axis=1).reshape(-1), x.std(axis=1).reshape(-1)])


def egemaps_features(paths: list[Path], cache_file: Path) -> np.ndarray:
    """eGeMAPSv02 functionals per file, cached in an .npz keyed by path."""
    import opensmile

    from memocmt.audio import load_audio

    cached = dict(np.load(cache_file, allow_pickle=False)) if cache_file.is_file() else {}
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    out = []
    for path in paths:
        key = str(path)
        if key not in cached:
            cached[key] = smile.process_signal(load_audio(path), 16000).to_numpy().reshape(-1).astype(np.float32)
        out.append(cached[key])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache_file, **cached)
    return np.stack(out)


def fit_and_score(x: np.ndarray, y: np.ndarray, split: np.ndarray, labels: list[str]) -> dict:
    """Standardise, pick C on val UA, refit on train and score test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from memocmt.metrics import classification_report

    def fit(c, rows):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))
        return clf.fit(x[rows], y[rows])

    train, val, test = (split == "train"), (split == "val"), (split == "test")
    val_ua = {}
    for c in C_GRID:
        pred = fit(c, train).predict(x[val])
        val_ua[c] = classification_report(y[val], pred, labels).ua
    best_c = max(val_ua, key=val_ua.get)
    clf = fit(best_c, train)
    report = classification_report(y[test], clf.predict(x[test]), labels, clf.predict_proba(x[test]))
    return {"C": best_c, "val_ua": val_ua[best_c], "test_ua": report.ua, "test_wa": report.wa,
            "test_macro_f1": report.macro_f1, "dims": int(x.shape[1])}


def speaker_centred(x: np.ndarray, speakers: list[str], means: dict[str, np.ndarray]) -> np.ndarray:
    """Each row minus its speaker's mean feature vector."""
    return x - np.stack([means[s] for s in speakers])


def speaker_zscored(x: np.ndarray, speakers: list[str]) -> np.ndarray:
    """Each row standardised on the mean and std of its speaker's rows (no labels)."""
    out = np.empty_like(x, dtype=np.float64)
    speakers = np.asarray(speakers)
    for s in np.unique(speakers):
        rows = speakers == s
        out[rows] = (x[rows] - x[rows].mean(axis=0)) / (x[rows].std(axis=0) + 1e-8)
    return out


def speaker_state_stats(cache, manifest) -> dict[str, np.ndarray]:
    """Each speaker's (2, L, D) mean and variance of its encoder states over all its recordings."""
    from memocmt.trainer.embed_cache import cached_utterance_stats
    from memocmt.speaker_norm import pool_stats

    by_speaker: dict[str, list[np.ndarray]] = {}
    for u in manifest:
        by_speaker.setdefault(u.speaker, []).append(cached_utterance_stats(cache.audio(u.audio)))
    return {s: pool_stats(np.stack(rows)) for s, rows in by_speaker.items()}


def standardised(states, stats: np.ndarray):
    """(L, T, D) states standardised per layer and dimension by (2, L, D) speaker statistics."""
    import torch

    mean, var = torch.from_numpy(stats[0])[:, None], torch.from_numpy(stats[1])[:, None]
    return (states.float() - mean) / torch.sqrt(var + 1e-5)


def run(ravdess: Path, classes: list[str], cache_dir: Path, audio_encoder: str | None = None) -> dict:
    from memocmt.corpora import build_ravdess
    from memocmt.trainer.embed_cache import EmbeddingCache
    from memocmt.model import MemoCMT

    model = MemoCMT.from_preset("edge", modalities="audio", **({"audio_encoder": audio_encoder} if audio_encoder else {}))
    cache = EmbeddingCache(cache_dir, model)
    everything = build_ravdess(ravdess, classes="8", test_speakers=TEST_ACTORS, val_speakers=VAL_ACTORS)
    cache.fill_audio([u.audio for u in everything])
    by_speaker: dict[str, list[np.ndarray]] = {}
    for u in everything:
        by_speaker.setdefault(u.speaker, []).append(probe_features(cache.audio(u.audio), "all"))
    speaker_means = {s: np.mean(rows, axis=0) for s, rows in by_speaker.items()}
    speaker_stats = speaker_state_stats(cache, everything)
    results: dict = {}
    for c in classes:
        manifest = build_ravdess(ravdess, classes=c, test_speakers=TEST_ACTORS, val_speakers=VAL_ACTORS)
        paths = [u.audio for u in manifest]
        y = np.asarray(manifest.targets())
        split = np.asarray([u.split for u in manifest])
        cache.fill_audio(paths)
        states = [cache.audio(p) for p in paths]
        features = {
            "probe-all": np.stack([probe_features(s, "all") for s in states]),
            "probe-last": np.stack([probe_features(s, "last") for s in states]),
            "probe-all-speaker": speaker_centred(np.stack([probe_features(s, "all") for s in states]),
                                                 [u.speaker for u in manifest], speaker_means),
            "probe-all-speaker-std": np.stack([probe_features(standardised(s, speaker_stats[u.speaker]), "all")
                                               for s, u in zip(states, manifest)]),
            "egemaps": egemaps_features(paths, cache_dir / "egemaps.npz"),
        }
        features["probe-all-speaker-std+egemaps"] = np.concatenate(
            [features["probe-all-speaker-std"], speaker_zscored(features["egemaps"], [u.speaker for u in manifest])], axis=1)
        results[f"ravdess-{c}"] = {name: fit_and_score(x, y, split, list(manifest.labels)) for name, x in features.items()}
        results[f"ravdess-{c}"]["counts"] = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    return results


def markdown(results: dict) -> str:
    lines = ["| task | features | dims | C | val UA | test UA | test WA |", "|---|---|---:|---:|---:|---:|---:|"]
    for task, by_name in results.items():
        for name, r in by_name.items():
            if name != "counts":
                lines.append(f"| {task} | {name} | {r['dims']} | {r['C']} | {r['val_ua']:.1%} | {r['test_ua']:.1%} | {r['test_wa']:.1%} |")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Linear-probe and eGeMAPS baselines on RAVDESS (speaker-independent).")
    parser.add_argument("--ravdess", required=True, help="RAVDESS root with Actor_XX folders")
    parser.add_argument("--classes", nargs="+", choices=("4", "8"), default=["4", "8"], help="class sets to run")
    parser.add_argument("--cache-dir", default=".cache/embeddings", help="embedding cache shared with training")
    parser.add_argument("--audio-encoder", help="probe another audio encoder (built-in name, local directory, e.g. a "
                        "faster-whisper model folder, or hub id; default: the edge preset's Whisper tiny.en)")
    parser.add_argument("--out", default="runs/baselines.json", help="JSON output (a .md table is written next to it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not Path(args.ravdess).is_dir():
        parser.error(f"--ravdess {args.ravdess} is not a directory.")
    started = time.perf_counter()
    results = run(Path(args.ravdess), args.classes, Path(args.cache_dir), args.audio_encoder)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "audio_encoder": args.audio_encoder or "whisper-tiny.en",
                               "seconds": time.perf_counter() - started,
                               "machine": platform.platform(), "split": "train 01-14, val 15-16, test 17-20"}, indent=2))
    out.with_suffix(".md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
