"""What does short-context decoding (Whisper's decoder on the emotion model's own-length encoder
pass) cost in words, and what does it save against Whisper's standard 30 s window? On 60 complete
synthetic utterances (3.1 s) it gave fewer errors (WER 21.1% standard, 15.1% short) at 4.3x the
speed (p50); on 60 RAVDESS clips that this copy cuts mid-word at 2.39 s, 39 loop and fall back,
so their WER holds (17.5% vs 18.3%) but they pay for both passes. Short context is therefore the
default on CPU (`memocmt-live --asr-context`). Results: benchmarks/results/asr_context.md.

Short-context decoding encodes the utterance (plus `--pad` seconds of silence) at its own
length with the emotion model's Whisper encoder and runs Whisper's decoder on those states
(memocmt.live.asr). This script measures what that costs in words and saves in time, on
utterances whose words are known:

  * synthetic: espeak-ng sentences in several voices (memocmt.synthetic), complete utterances;
  * RAVDESS (with --ravdess): real actors saying one of two fixed sentences. This copy is cut
    at 2.39 s, so most clips lose their last word: its WER mixes recognition errors with
    Whisper completing or not completing the cut word, for both paths alike.

    python benchmarks/studies/asr_context.py [--per-class 15] [--ravdess ../shared/data/ravdess-a01-a20]

The two paths run interleaved on each utterance; timings are medians of single calls.
Prints a JSON report with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

RAVDESS_SENTENCES = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("-", " ")).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diag, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (ref[i - 1] != hyp[j - 1]))
    return row[-1]


def synthetic_items(per_class: int, work: Path) -> list[tuple[np.ndarray, str]]:
    from memocmt.audio import load_audio
    from memocmt.synthetic import generate_synthetic_corpus

    manifest = generate_synthetic_corpus(work / "synthetic", n_per_class=per_class, seed=1)
    return [(load_audio(item.audio), item.text) for item in manifest.items]


def ravdess_items(folder: Path, count: int) -> list[tuple[np.ndarray, str]]:
    from memocmt.audio import load_audio

    files = sorted(folder.glob("Actor_*/*.flac"))
    picked = [files[i] for i in np.random.default_rng(0).choice(len(files), size=min(count, len(files)), replace=False)]
    return [(load_audio(f), RAVDESS_SENTENCES[f.stem.split("-")[4]]) for f in picked]


def measure(items, short, full) -> dict:
    rows = {"full": {"errors": 0, "ms": []}, "short": {"errors": 0, "ms": []}}
    n_words, contexts = 0, []
    for audio, text in items:
        ref = words(text)
        n_words += len(ref)
        for name, transcriber in (("full", full), ("short", short)):
            result = transcriber.transcribe(audio)
            rows[name]["errors"] += edit_distance(ref, words(result.text))
            rows[name]["ms"].append(result.asr_ms)
            if name == "short":
                contexts.append(result.context)
    report = {"utterances": len(items), "words": n_words,
              "mean_duration_s": float(np.mean([a.size for a, _ in items]) / 16000)}
    for name, row in rows.items():
        report[name] = {"wer_percent": round(100 * row["errors"] / max(1, n_words), 1),
                        "p50_ms": round(float(np.median(row["ms"])), 1),
                        "p95_ms": round(float(np.percentile(row["ms"], 95)), 1)}
    report["short"]["fallbacks"] = contexts.count("full")
    report["speedup_p50"] = round(report["full"]["p50_ms"] / report["short"]["p50_ms"], 2)
    return report


def main() -> None:
    from benchmarks.machine import machine_info
    from memocmt.live.asr import AsrConfig, Transcriber, asr_model_for
    from memocmt.live.pipeline import load_emotion_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=15, help="synthetic utterances per emotion (default: 15)")
    p.add_argument("--ravdess", type=Path, help="RAVDESS folder (Actor_*/...flac); omitted: synthetic only")
    p.add_argument("--ravdess-count", type=int, default=60, help="RAVDESS clips to use (default: 60)")
    p.add_argument("--pad", type=float, default=1.0, help="silence appended for short-context decoding (default: 1.0)")
    p.add_argument("--model", help="emotion bundle whose Whisper encoder is used (default: the shipped model)")
    args = p.parse_args()

    emotion = load_emotion_model(args.model)
    asr_model = asr_model_for(emotion.bundle)  # the Whisper whose encoder the bundle uses, as memocmt-live picks it
    full = Transcriber(AsrConfig(model=asr_model, context="full", language="en"))
    short = Transcriber(AsrConfig(model=asr_model, context="short", context_pad_s=args.pad, language="en"))
    if not short.attach_encoder(emotion.bundle.whisper_encoder()):
        sys.exit("The emotion model's audio encoder is not this Whisper model's; nothing to compare.")
    full.warm_up()
    short.warm_up()
    report = {"benchmark": "asr_context", "machine": machine_info(),
              "config": {"asr_model": full.model_name, "compute_type": full.compute_type, "pad_s": args.pad,
                         "emotion_model": emotion.name}}
    with tempfile.TemporaryDirectory() as tmp:
        report["synthetic"] = measure(synthetic_items(args.per_class, Path(tmp)), short, full)
    if args.ravdess:
        report["ravdess_truncated"] = measure(ravdess_items(args.ravdess, args.ravdess_count), short, full)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout
    main()
