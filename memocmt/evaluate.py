"""Evaluation: `memocmt-eval --model PATH --manifest M --split test --json out/metrics.json`.

The model is a checkpoint (`.safetensors`), an exported ONNX bundle folder (run through
memocmt.runtime, no PyTorch needed) or, by default, the shipped model. Data is a manifest
split or a folder-per-label tree. Labels of another corpus are mapped explicitly with
`--label-map 'calm=neutral,fearful=,...'` (empty target = drop) or a JSON file; a label that is
neither a model class nor mapped is an error, never silently dropped or mis-scored.

Next to the JSON it writes `<stem>.md` (summary), `<stem>.confusion.txt`,
`<stem>.confusion.png` and `<stem>.roc.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

from .calibration import CalibrationReport, calibration_report, plot_reliability
from .manifest import SPLITS, Manifest, ManifestError, Problem, read_manifest
from .metrics import ClassificationReport, UADifference, classification_report, format_confusion, format_summary, ua_difference
from .perturb import Perturbation, parse_perturbations, perturbed_speaker
from .results import Prediction

logger = logging.getLogger("memocmt")

DROP_WORDS = ("", "drop", "none", "null")
# The live-like scores the recipe and the benchmark report for a speaker_norm model: speaker
# statistics from this many of the speaker's utterances (speaker_utterances=K).
LIVE_SPEAKER_UTTERANCES = (1, 3, 10)


class Predictor(Protocol):
    """What both MemoCMT (PyTorch) and runtime.Bundle (ONNX) offer."""

    labels: list[str]
    speaker_norm: str  # "mean" / "mean+std" when it takes speaker statistics (memocmt.speaker_norm), else ""
    speaker_prior: np.ndarray | None  # (2, L, D) prior statistics of a speaker_norm model

    def audio_stats(self, audios) -> np.ndarray: ...  # raw audio or an audio encoding

    def encode(self, audios: list[np.ndarray] | None, texts: list[str] | None) -> tuple: ...  # (audio, text) encodings

    def classify_batch(self, audio, text, speaker_stats: np.ndarray | None = None,
                       language: str | None = None) -> list[Prediction]: ...

    def reads_text(self, language: str | None) -> bool: ...  # the language policy (memocmt.language_policy)

    def predict_batch(self, audios: list[np.ndarray] | None, texts: list[str] | None,
                      speaker_stats: np.ndarray | None = None) -> list[Prediction]: ...


def load_predictor(path: str | os.PathLike | None = None) -> Predictor:
    """A checkpoint file, an ONNX bundle folder, or (None) the shipped default model."""
    if path is None:
        from .pretrained import load_default

        return load_default()
    path = Path(path)
    if path.is_dir():
        from .runtime import load_bundle

        return load_bundle(path)
    if path.is_file():
        from .model import load_checkpoint

        return load_checkpoint(path)
    raise FileNotFoundError(f"Model not found: {path} (give a .safetensors checkpoint or an ONNX bundle folder).")


# ---------------------------------------------------------------------------- labels


def parse_label_map(spec: str) -> dict[str, str | None]:
    """`'calm=neutral,fearful='` or the path of a JSON object; an empty target (or null/drop) drops the class."""
    if Path(spec).is_file():
        try:
            data = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"Label map {spec} is not a readable JSON file: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(v, (str, type(None))) for v in data.values()):
            raise ValueError(f"Label map {spec} must be a JSON object of label -> label (or null to drop).")
        return {str(k): (None if v is None or v.lower() in DROP_WORDS else v) for k, v in data.items()}
    mapping: dict[str, str | None] = {}
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        old, sep, new = pair.partition("=")
        if not sep or not old.strip():
            raise ValueError(f"Label map entry {pair!r} is not old=new (or old= to drop).")
        mapping[old.strip()] = None if new.strip().lower() in DROP_WORDS else new.strip()
    return mapping


def align_labels(manifest: Manifest, model_labels: Sequence[str], mapping: Mapping[str, str | None] | None = None) -> Manifest:
    """Rename/drop the data's labels onto the model's classes; refuse any label left unaccounted for."""
    mapping = dict(mapping or {})
    bad_targets = sorted({v for v in mapping.values() if v is not None} - set(model_labels))
    if bad_targets:
        raise ValueError(f"The label map sends data to {bad_targets}, which the model does not have; its classes are {list(model_labels)}.")
    used = {u.label for u in manifest.items}
    unaccounted = sorted(label for label in used if label not in mapping and label not in model_labels)
    if unaccounted:
        raise ValueError(
            f"The data has labels {unaccounted} that the model {list(model_labels)} does not know and the label map "
            "does not cover; map them with --label-map 'old=new' or drop them with 'old='."
        )
    items = [dataclasses.replace(u, label=mapping.get(u.label, u.label)) for u in manifest.items]
    items = [u for u in items if u.label is not None]
    if not items:
        raise ValueError("No utterances are left after applying the label map.")
    return Manifest.from_items(items, list(model_labels), manifest.source)


# ---------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class EvaluationResult:
    report: ClassificationReport
    skipped: list[Problem]  # utterances whose audio could not be used
    predictions: list[tuple[str, str, str]]  # (utterance id, true label, predicted label)
    probabilities: np.ndarray | None = None  # (N, classes) in the order of `predictions`, classes as report.labels

    @property
    def calibration(self) -> CalibrationReport:
        """ECE, NLL and Brier score of the probabilities (memocmt.calibration)."""
        labels = list(self.report.labels)
        return calibration_report(self.probabilities, [labels.index(t) for _, t, _ in self.predictions])


def evaluate_manifest(predictor: Predictor, manifest: Manifest, *, batch_size: int = 8, on_bad_file: str = "skip",
                      progress: bool = True, speaker_utterances: int = 0, seed: int = 0,
                      perturbation: Perturbation | None = None) -> EvaluationResult:
    """Predict every utterance of `manifest` (labels already aligned to the model) and score it.

    A speaker_norm model (memocmt.speaker_norm) classifies each utterance with its speaker's
    statistics pooled over all of the speaker's utterances or, with `speaker_utterances=K`, over
    K of them (this one and K-1 others drawn with `seed`) and the model's prior: what live
    adaptation has after K utterances of a speaker. See `evaluate_speaker_utterances`.
    With `perturbation`, every utterance is scored as that perturbed voice (memocmt.perturb).
    """
    return evaluate_speaker_utterances(predictor, manifest, (speaker_utterances,), batch_size=batch_size,
                                       on_bad_file=on_bad_file, progress=progress, seed=seed,
                                       perturbation=perturbation)[speaker_utterances]


def evaluate_voices(predictor: Predictor, manifest: Manifest, perturbations: Sequence[Perturbation], *,
                    batch_size: int = 8, on_bad_file: str = "skip", progress: bool = True, speaker_utterances: int = 0,
                    seed: int = 0) -> EvaluationResult:
    """Test-time augmentation over voices: each utterance is classified as recorded and as each perturbed
    copy (sox speed / pitch, memocmt.perturb), and scored by the mean of those class probabilities.

    Each copy of a speaker is a voice of its own, with its own speaker statistics, as a training run
    with `perturb` sees it; the copies of one utterance share its id. An utterance unusable in any
    version is skipped in all of them.
    """
    if not perturbations:
        raise ValueError("evaluate_voices needs at least one perturbation (e.g. 'speed 0.9').")
    options = dict(batch_size=batch_size, on_bad_file=on_bad_file, progress=progress,
                   speaker_utterances=speaker_utterances, seed=seed)
    versions = [evaluate_manifest(predictor, manifest, **options)]
    for p in perturbations:
        # a row without a speaker stays without one (normalised alone)
        copies = Manifest.from_items([dataclasses.replace(u, speaker=perturbed_speaker(u.speaker_key(), p)[1]) if u.speaker
                                      else u for u in manifest.items], manifest.labels)
        versions.append(evaluate_manifest(predictor, copies, perturbation=p, **options))

    scored = [dict(zip(_row_keys([uid for uid, _, _ in v.predictions]),
                       ((label, probs) for (_, label, _), probs in zip(v.predictions, v.probabilities))))
              for v in versions]
    rows = [key for key in scored[0] if all(key in s for s in scored[1:])]
    if not rows:
        raise ManifestError("No utterance could be evaluated in every perturbed version.")
    labels = list(versions[0].report.labels)
    mean = np.stack([np.mean([s[key][1] for s in scored], axis=0) for key in rows])
    picked = mean.argmax(1)
    targets = [scored[0][key][0] for key in rows]
    skipped = {str(p): p for version in versions for p in version.skipped}
    return EvaluationResult(classification_report([labels.index(t) for t in targets], picked, labels, mean),
                            list(skipped.values()),
                            [(uid, t, labels[k]) for (uid, _), t, k in zip(rows, targets, picked)], mean)


def _row_keys(ids: Sequence[str]) -> list[tuple[str, int]]:
    """(id, occurrence) per row, so that a file listed twice stays two rows when evaluations are paired."""
    seen: dict[str, int] = {}
    keys = []
    for uid in ids:
        seen[uid] = seen.get(uid, -1) + 1
        keys.append((uid, seen[uid]))
    return keys


def prediction_rows(result: EvaluationResult, manifest: Manifest) -> list[dict]:
    """One JSON-ready record per scored utterance: id, speaker (None without one), true and predicted
    label and the class probabilities; what `compare_predictions` pairs two evaluations by."""
    speaker_of = {u.id or str(u.audio): u.speaker or None for u in manifest.items}
    labels = list(result.report.labels)
    return [{"id": uid, "speaker": speaker_of.get(uid), "label": label, "predicted": predicted,
             "probabilities": {c: round(float(p), 6) for c, p in zip(labels, probs)}}
            for (uid, label, predicted), probs in zip(result.predictions, result.probabilities)]


def compare_predictions(ours: Sequence[dict], theirs: Sequence[dict], labels: Sequence[str], *,
                        seed: int = 0) -> UADifference:
    """Our UA minus theirs on the same utterances (records of `prediction_rows`), with a 95% paired
    bootstrap interval grouped by speaker when every utterance has one (memocmt.metrics.ua_difference)."""
    a, b = (dict(zip(_row_keys([r["id"] for r in rows]), rows)) for rows in (ours, theirs))
    if a.keys() != b.keys():
        missing, extra = len(a.keys() - b.keys()), len(b.keys() - a.keys())
        raise ValueError(f"The two evaluations scored different utterances ({missing} only here, {extra} only there); "
                         "compare evaluations of the same data and split.")
    differ = [key[0] for key in a if a[key]["label"] != b[key]["label"]]
    if differ:
        raise ValueError(f"The two evaluations give {differ[0]} different true labels ({len(differ)} utterance(s)); "
                         "were they scored with the same --label-map?")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({r["predicted"] for r in b.values()} - index.keys())
    if unknown:
        raise ValueError(f"The other evaluation predicts {unknown}, which this model has no class for.")
    keys = list(a)
    speakers = [a[k]["speaker"] for k in keys]
    return ua_difference([index[a[k]["label"]] for k in keys], [index[a[k]["predicted"]] for k in keys],
                         [index[b[k]["predicted"]] for k in keys], len(labels),
                         groups=speakers if all(speakers) else None, seed=seed)


# Encodings kept between the statistics pass and the classification passes, at most (bytes); a
# larger manifest is encoded again for each pass instead.
KEEP_ENCODINGS_BYTES = 1 << 30


def evaluate_speaker_utterances(predictor: Predictor, manifest: Manifest, speaker_utterances: Sequence[int] = (0,), *,
                                batch_size: int = 8, on_bad_file: str = "skip", progress: bool = True, seed: int = 0,
                                keep_bytes: int = KEEP_ENCODINGS_BYTES,
                                perturbation: Perturbation | None = None) -> dict[int, EvaluationResult]:
    """`evaluate_manifest` for each K in `speaker_utterances` (0: all of the speaker's utterances), encoding once.

    A speaker_norm model takes two passes: the first encodes every utterance and computes its audio
    statistics (no labels), the others classify with the speaker statistics of each K. Encodings
    are kept in memory between them up to `keep_bytes`; beyond that every pass encodes again.
    With `perturbation`, each audio file is perturbed after loading (memocmt.perturb).
    """
    if not (hasattr(predictor, "encode") and hasattr(predictor, "classify_batch")):
        predictor = _Unsplit(predictor)
    labels = list(predictor.labels)
    index = {label: i for i, label in enumerate(labels)}
    items = list(manifest.items)
    norm = bool(getattr(predictor, "speaker_norm", ""))
    if any(speaker_utterances) and not norm:
        raise ValueError("speaker_utterances needs a speaker-normalised model (speaker_norm); this one has none.")
    skipped: list[Problem] = []

    def encoded_batches(record: list[Problem], desc: str):
        for batch, audios in _audio_batches(items, batch_size, on_bad_file, record, progress, desc, perturbation,
                                            getattr(predictor, "trim", "none")):
            yield (batch, *predictor.encode(audios, [items[i].text for i in batch]))

    def score(batches, stats_of: dict | None) -> EvaluationResult:
        targets, probs, predictions = [], [], []
        for batch, audio, text in batches:
            batch_stats = None if stats_of is None else np.stack([stats_of[i] for i in batch])
            for i, p in zip(batch, _classify(predictor, audio, text, batch_stats, [items[i].language for i in batch])):
                u = items[i]
                targets.append(index[u.label])
                probs.append([p.probabilities[label] for label in labels])
                predictions.append((u.id or str(u.audio), u.label, p.label))
        if not targets:
            raise ManifestError("No utterance could be evaluated; every audio file was unusable.")
        probs_arr = np.asarray(probs)
        return EvaluationResult(classification_report(targets, probs_arr.argmax(1), labels, probs_arr), skipped, predictions,
                                probs_arr)

    if not norm:  # one pass: encode and classify each batch
        results = {0: score(encoded_batches(skipped, "evaluate"), None)}
    else:
        kept: list | None = []  # (rows, audio encoding, text encoding) per batch while within keep_bytes
        kept_bytes, rows, stats = 0, [], []
        for batch, audio, text in encoded_batches(skipped, "encode"):
            rows += batch
            stats.append(predictor.audio_stats(audio))
            if kept is not None:
                kept_bytes += sum(_nbytes(e) for e in (audio, text) if e is not None)
                kept = kept + [(batch, audio, text)] if kept_bytes <= keep_bytes else None
        if not rows:
            raise ManifestError("No utterance could be evaluated; every audio file was unusable.")
        if kept is None:
            logger.info("The encodings exceed %.1f GB; encoding the manifest again for each pass.", keep_bytes / 1e9)
        speakers = [items[i].speaker_key() if items[i].speaker else None for i in rows]
        stats = np.concatenate(stats)
        prior = getattr(predictor, "speaker_prior", None)
        results = {k: score(kept if kept is not None else encoded_batches([], "evaluate"),
                            dict(zip(rows, _speaker_stats(stats, speakers, k, prior, seed))))
                   for k in dict.fromkeys(speaker_utterances)}
    if skipped:
        logger.warning("Skipped %d unusable audio file(s): %s", len(skipped), "; ".join(str(p) for p in skipped[:5]))
    return results


# A speaker with fewer utterances than this in the data (or a row without a speaker) is not
# described by them alone: its statistics pool them with the model's prior, as live does.
FEW_SPEAKER_UTTERANCES = 10


def _classify(predictor, audio, text, stats, languages: list[str | None]) -> list[Prediction]:
    """A batch classified as live classifies it: a row in a language the model does not read (its manifest
    `language`) from the audio alone (memocmt.language_policy); every other row with its transcript."""
    policy = getattr(predictor, "reads_text", None)
    foreign = [lang for lang in languages if policy is not None and not policy(lang)]
    read = predictor.classify_batch(audio, text, stats)
    if not foreign:
        return read
    unread = predictor.classify_batch(audio, text, stats, language=foreign[0])  # the head only runs twice
    return [r if policy(lang) else u for r, u, lang in zip(read, unread, languages)]


def _speaker_stats(stats: np.ndarray, speakers: list, k: int, prior: np.ndarray | None, seed: int) -> list[np.ndarray]:
    """Each row's speaker statistics: pooled over all of its speaker's rows (k=0), or over the row itself
    and k-1 other rows of its speaker drawn with `seed`, with the prior. With k=0 a speaker that has fewer
    than FEW_SPEAKER_UTTERANCES rows, or a row without a speaker, pools with the prior as well: one clip
    standardised on its own statistics alone loses what tells emotions apart."""
    from .speaker_norm import group_stats, pool_stats

    by_speaker: dict = {}
    for r, speaker in enumerate(speakers):
        by_speaker.setdefault(speaker if speaker is not None else ("row", r), []).append(r)
    if not k:
        pooled = list(group_stats(stats, speakers))
        for rows in by_speaker.values():
            if len(rows) < FEW_SPEAKER_UTTERANCES and prior is not None:
                few = pool_stats(stats[rows], prior)
                for r in rows:
                    pooled[r] = few
        return pooled
    rng = np.random.default_rng(seed)
    pooled = []
    for r, speaker in enumerate(speakers):
        others = [j for j in by_speaker[speaker] if j != r] if speaker is not None else []
        picked = rng.permutation(others)[: k - 1].tolist()
        pooled.append(pool_stats(stats[[r, *picked]], prior))
    return pooled


def describe_protocol(predictor: Predictor, manifest: Manifest, speaker_utterances: int = 0) -> str:
    """One sentence saying what an evaluation's figure stands for: how speaker statistics were taken."""
    if not getattr(predictor, "speaker_norm", ""):
        return "Each utterance scored on its own (the model does not normalise speakers)."
    counts: dict = {}
    for u in manifest:
        if u.speaker:
            counts[u.speaker_key()] = counts.get(u.speaker_key(), 0) + 1
    anonymous = sum(1 for u in manifest if not u.speaker)
    if speaker_utterances:
        return (f"Speaker statistics from {speaker_utterances} utterance(s) of each speaker with the model's prior, as "
                f"live after {speaker_utterances} utterance(s) ({len(counts)} speakers"
                + (f"; {anonymous} utterances without a speaker scored alone with the prior" if anonymous else "") + ").")
    full = sum(1 for n in counts.values() if n >= FEW_SPEAKER_UTTERANCES)
    few = len(counts) - full
    parts = [f"{full} speaker(s) standardised on all of their utterances"] if full else []
    if few:
        parts.append(f"{few} speaker(s) with fewer than {FEW_SPEAKER_UTTERANCES} utterances pooled with the model's prior")
    if anonymous:
        parts.append(f"{anonymous} utterance(s) without a speaker scored alone with the prior, as live scores a "
                     "first utterance (name speakers with --speaker-pattern for speaker-level statistics)")
    return "Speaker statistics: " + "; ".join(parts) + "."


def _nbytes(encoding) -> int:
    """Size of an encoding's states (a NumPy array, a tensor, or an onnxruntime OrtValue of float32),
    or of a list of raw inputs."""
    if isinstance(encoding, (list, tuple)) and not hasattr(encoding, "states"):
        return sum(_nbytes(x) for x in encoding)
    states = getattr(encoding, "states", encoding)
    if isinstance(states, str):
        return len(states)
    if hasattr(states, "nbytes"):
        return int(states.nbytes)
    if hasattr(states, "element_size"):
        return states.element_size() * states.numel()
    return 4 * int(np.prod(states.shape()))


class _Unsplit:
    """A predictor with only `audio_stats` and `predict_batch`: its "encodings" are the raw inputs."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.labels = predictor.labels
        self.speaker_norm = getattr(predictor, "speaker_norm", "")
        self.speaker_prior = getattr(predictor, "speaker_prior", None)
        self.trim = getattr(predictor, "trim", "none")

    def encode(self, audios, texts):
        return audios, texts

    def audio_stats(self, audios):
        return self.predictor.audio_stats(audios)

    def classify_batch(self, audios, texts, speaker_stats=None):
        if speaker_stats is None:
            return self.predictor.predict_batch(audios, texts)
        return self.predictor.predict_batch(audios, texts, speaker_stats)


def _audio_batches(items: list, batch_size: int, on_bad_file: str, skipped: list[Problem], progress: bool, desc: str,
                   perturbation: Perturbation | None = None, trim: str = "none"):
    """Yield (item indices, audio arrays) per batch, each perturbed if asked and cut as the model's
    training cut clips (`trim`); unusable audio stops or is appended to `skipped`."""
    from tqdm.auto import tqdm

    from .audio import AudioError, check_audio, load_audio
    from .perturb import as_trained

    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(items), batch_size):
        batch, audios = [], []
        for i in range(start, min(start + batch_size, len(items))):
            u = items[i]
            try:
                audio = check_audio(load_audio(u.audio), name=str(u.audio))
                audios.append(as_trained(audio, perturbation, trim, Path(u.audio).name))
            except (AudioError, OSError) as e:
                if on_bad_file == "stop":
                    raise ManifestError(f"Row {u.line or i + 1}: cannot use {u.audio}: {e}") from e
                skipped.append(Problem(u.line or i + 1, str(u.audio), str(e)))
                continue
            batch.append(i)
        bar.update(min(batch_size, len(items) - start))
        if batch:
            yield batch, audios
    bar.close()


# ---------------------------------------------------------------------------- output


def write_report(report: ClassificationReport, json_path: str | os.PathLike, *, title: str = "Evaluation",
                 extra: dict | None = None, calibration: CalibrationReport | None = None) -> Path:
    """Write the JSON metrics and, next to it, the markdown summary, confusion text/PNG and ROC PNG
    (and with `calibration`, its figures in the JSON and summary and the reliability diagram PNG)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    stem = json_path.with_suffix("")
    data = {**report.to_dict(), **({"calibration": calibration.to_dict()} if calibration else {}), **(extra or {})}
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False))
    Path(f"{stem}.md").write_text(format_summary(report, title) + (format_calibration(calibration) if calibration else ""))
    if calibration is not None:
        plot_reliability(calibration, Path(f"{stem}.reliability.png"), title)
    Path(f"{stem}.confusion.txt").write_text(format_confusion(report) + "\n")
    plot_confusion(report, Path(f"{stem}.confusion.png"), title)
    if report.roc:
        plot_roc(report, Path(f"{stem}.roc.png"), title)
    return json_path


def format_calibration(calibration: CalibrationReport) -> str:
    return (f"\nCalibration: ECE {calibration.ece:.3f} (10 bins), NLL {calibration.nll:.3f}, Brier {calibration.brier:.3f}; "
            f"mean confidence {calibration.mean_confidence:.3f} at accuracy {calibration.accuracy:.3f}. A perfectly calibrated "
            f"model with these confidences would show ECE {calibration.ece_calibrated:.3f} on this many utterances "
            f"(share of its draws at or above {calibration.ece:.3f}: {calibration.ece_p:.2f}).\n")


def plot_confusion(report: ClassificationReport, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    matrix = np.asarray(report.confusion)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(report.labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]}\n{rows[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), report.labels, rotation=45, ha="right")
    ax.set_yticks(range(k), report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\nUA {report.ua:.1%}, WA {report.wa:.1%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(report: ClassificationReport, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for label, curve in report.roc.items():
        if not np.isnan(curve.auc):
            ax.plot(curve.fpr, curve.tpr, label=f"{label} (AUC {curve.auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title}: one-vs-rest ROC", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memocmt-eval", description="Score a MemoCMT model on labelled speech.")
    parser.add_argument("--model", help="checkpoint (.safetensors) or ONNX bundle folder (default: the shipped model)")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--manifest", help="JSONL manifest (see memocmt.manifest)")
    data.add_argument("--data", help="folder-per-label tree: <dir>/<label>/*.wav, optional <stem>.txt transcripts")
    parser.add_argument("--speaker-pattern", metavar="REGEX",
                        help="with --data: regex whose first group (or group 'speaker') finds the speaker in a file name, "
                             "e.g. '^(\\d+)_' or '-(\\d+)\\.wav$'; without it every clip is scored as a speaker heard once")
    parser.add_argument("--no-transcribe", action="store_true",
                        help="with --data: leave clips without a <stem>.txt transcript with empty text instead of "
                             "transcribing them with the offline Whisper model (cached)")
    parser.add_argument("--asr-cache", metavar="FILE",
                        help="transcript cache for --data clips without transcripts (default: $MEMOCMT_HOME/asr_cache.json)")
    parser.add_argument("--split", default="test", choices=(*SPLITS, "all"), help="manifest split to score (default: test)")
    parser.add_argument("--label-map", help="'old=new,other=' (empty target drops the class) or a JSON file")
    parser.add_argument("--json", required=True, help="output JSON; the summary and plots are written next to it")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances per forward pass")
    parser.add_argument("--speaker-utterances", type=int, default=0, metavar="K",
                        help="speaker-normalised models: pool each speaker's statistics over K of its utterances (this "
                             "one and K-1 at random) and the model's prior, as live after K utterances (default: all)")
    parser.add_argument("--voices", nargs="+", metavar="SPEC",
                        help="test-time augmentation: also classify every utterance as these perturbed voices (sox "
                             "effect lines, e.g. --voices 'speed 0.9' 'speed 1.1' 'pitch -200' 'pitch 200', the default "
                             "recipe's training voices) and score the mean of the probabilities; needs sox")
    parser.add_argument("--denoise", choices=("off", "dfn3"), default="off",
                        help="enhance every clip whole before scoring, as memocmt-live --denoise does (dfn3: "
                             "DeepFilterNet3, needs the noise extra; default: off)")
    parser.add_argument("--compare", metavar="OTHER_JSON",
                        help="an earlier --json output on the same data: report this model's UA minus that one's with "
                             "a 95%% paired bootstrap interval (whole speakers resampled when the data names 10 or more, "
                             "utterances within each speaker when it names fewer)")
    parser.add_argument("--on-bad-file", choices=("skip", "stop"), default="skip", help="unusable audio: skip and list, or stop")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def cli(argv: list[str] | None = None) -> int:
    from .corpora.folder import pattern_argv

    parser = build_parser()
    args = parser.parse_args(pattern_argv(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.data and args.split != "test":
        parser.error("--split applies to --manifest; a --data folder is scored whole.")
    if args.manifest and (args.speaker_pattern or args.no_transcribe or args.asr_cache):
        parser.error("--speaker-pattern, --no-transcribe and --asr-cache apply to --data; a manifest names its speakers "
                     "and texts.")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1.")
    if args.denoise != "off" and args.voices:
        parser.error("--denoise and --voices cannot be combined; score one of them at a time.")
    if args.speaker_utterances < 0:
        parser.error("--speaker-utterances must be at least 1 (or 0 for all of a speaker's utterances).")
    try:
        from .denoise import ClipEnhancer

        enhancer = ClipEnhancer(args.denoise) if args.denoise != "off" else None  # a missing runtime fails first
        other = _read_predictions(args.compare) if args.compare else None
        if args.manifest:
            manifest = read_manifest(args.manifest)
            if args.split != "all":
                manifest = manifest.split(args.split)
            if not len(manifest):
                raise ValueError(f"{args.manifest} has no utterances in split {args.split!r}.")
        else:
            from .corpora import build_folder

            manifest = build_folder(args.data, speaker_pattern=args.speaker_pattern)
            manifest = Manifest.from_items([dataclasses.replace(u, speaker=u.speaker if args.speaker_pattern else "")
                                            for u in manifest.items], manifest.labels, manifest.source)
        mapping = parse_label_map(args.label_map) if args.label_map else {}
        predictor = load_predictor(args.model)
        if args.data:
            manifest = _fill_transcripts(manifest, predictor, args)
        if args.speaker_utterances and not getattr(predictor, "speaker_norm", ""):
            raise ValueError(f"--speaker-utterances applies to speaker-normalised models; {args.model or 'the shipped model'} "
                             "is not one (its config has speaker_norm: none).")
        voices = parse_perturbations(args.voices or [])
        manifest = align_labels(manifest, predictor.labels, mapping)
        options = dict(batch_size=args.batch_size, on_bad_file=args.on_bad_file, progress=not args.no_progress,
                       speaker_utterances=args.speaker_utterances)
        if enhancer is not None:
            options["perturbation"] = enhancer
        result = evaluate_voices(predictor, manifest, voices, **options) if voices else \
            evaluate_manifest(predictor, manifest, **options)
        rows = prediction_rows(result, manifest)
        protocol = describe_protocol(predictor, manifest, args.speaker_utterances)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"memocmt-eval: error: {e}", file=sys.stderr)
        return 2
    compared, mismatch = None, None
    if other is not None:  # a mismatch is reported after this evaluation is written, so it is not lost
        try:
            compared = compare_predictions(rows, other, result.report.labels)
        except ValueError as e:
            mismatch = f"--compare {args.compare}: {e}"
    source = args.manifest or args.data
    title = f"{Path(source).name}" + (f" ({args.split})" if args.manifest else "")
    write_report(result.report, args.json, title=title, calibration=result.calibration, extra={
        "model": str(args.model or "default"), "data": str(source), "split": args.split if args.manifest else "all",
        "label_map": mapping, "skipped": [str(p) for p in result.skipped],
        "speaker_utterances": args.speaker_utterances or "all", "protocol": protocol, "voices": [v.spec for v in voices], "denoise": args.denoise,
        **({"compared_with": {"path": str(args.compare), **compared.to_dict()}} if compared else {}),
        "predictions": rows,
    })
    print(format_summary(result.report, title) + format_calibration(result.calibration))
    print(protocol)
    if mismatch:
        print(f"memocmt-eval: error: {mismatch} (this evaluation was written to {args.json})", file=sys.stderr)
        return 2
    if compared:
        unit = {"groups": f"{compared.units} speakers resampled",
                "utterances within groups": f"utterances resampled within each of {compared.units} speakers, too few to "
                                            "resample: it speaks for these speakers only"}.get(compared.resampled,
                                                                                         "utterances resampled")
        print(f"Against {args.compare}: UA {100 * compared.difference:+.1f} points, 95% interval "
              f"[{100 * compared.low:+.1f}, {100 * compared.high:+.1f}] ({unit}); "
              + ("an interval that holds 0 does not tell the two apart." if compared.low <= 0 <= compared.high else
                 "the difference is more than chance."))
    return 0


def _fill_transcripts(manifest: Manifest, predictor: Predictor, args) -> Manifest:
    """Clips of a --data folder without a <stem>.txt: transcribed (cached) when the model reads text, or a
    loud warning with --no-transcribe."""
    modalities = getattr(predictor, "modalities", None) or getattr(getattr(predictor, "config", None), "modalities", "both")
    missing = sum(1 for u in manifest if not u.text)
    if not missing or modalities == "audio":
        return manifest
    if args.no_transcribe:
        logger.warning("%d of %d clips have no <stem>.txt transcript and are scored with empty text (--no-transcribe); "
                       "the text branch then sees nothing.", missing, len(manifest))
        return manifest
    from .pretrained import memocmt_home
    from .transcribe_cache import AsrConfig, transcribe_manifest

    cache = Path(args.asr_cache) if args.asr_cache else memocmt_home() / "asr_cache.json"
    logger.info("Transcribing %d clip(s) without a <stem>.txt transcript (offline Whisper, cached in %s)", missing, cache)
    return transcribe_manifest(manifest, cache, AsrConfig(), only_missing=True)


def _read_predictions(path: str) -> list[dict]:
    """The per-utterance predictions of an earlier `memocmt-eval --json` output."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--compare {path}: no such file.") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"--compare {path} is not a JSON file written by memocmt-eval ({e}).") from None
    rows = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"id", "label", "predicted"} <= r.keys() for r in rows):
        raise ValueError(f"--compare {path} holds no per-utterance predictions; score that model again with this "
                         "version of memocmt-eval (its --json output lists them).")
    return rows


if __name__ == "__main__":
    sys.exit(cli())
