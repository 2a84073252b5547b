"""Timing: per-stage latency, scaling with utterance length and batch size, load time and memory.

Every measurement interleaves the variants round-robin within a repetition (the starting
variant rotates between repetitions), so drift from other work on the machine hits all of
them alike. Warm-up calls are never counted. Percentiles are over utterances x repetitions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
MODEL_STAGES = ("features", "audio_encoder", "text_encoder", "fusion")
PIPELINE_STAGES = ("vad", "asr", *MODEL_STAGES)
VAD_BLOCK = 480  # samples pushed at a time (30 ms, as live capture delivers)
CLIP_GAP_S = 0.2  # silence between utterances joined into a longer clip
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Clip:
    """One utterance (or several joined): float32 16 kHz audio and its reference transcript."""

    audio: np.ndarray
    text: str
    id: str = ""

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def summarize(samples) -> dict:
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(x.mean()), "min": float(x.min()),
            "n": int(x.size)}


def rotated(names: list[str], k: int) -> list[str]:
    """The round-robin order for repetition k: every variant takes its turn going first."""
    if not names:
        return []
    k %= len(names)
    return names[k:] + names[:k]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def join_clips(clips: list[Clip], seconds: float) -> Clip:
    """A clip of exactly `seconds`: utterances joined with short gaps (cycled), then trimmed."""
    gap = np.zeros(int(CLIP_GAP_S * SAMPLE_RATE), dtype=np.float32)
    parts, words, n, i = [], [], 0, 0
    target = int(seconds * SAMPLE_RATE)
    while n < target:
        c = clips[i % len(clips)]
        parts += [c.audio, gap]
        words.append(c.text)
        n += c.audio.size + gap.size
        i += 1
    return Clip(np.concatenate(parts)[:target].copy(), " ".join(words), f"{seconds:g}s")


# ---------------------------------------------------------------------- VAD and ASR


class VadTimer:
    """Runs a VAD segmenter over audio in live-sized blocks and times it."""

    def __init__(self, backend: str):
        from memocmt.live.vad import Segmenter, VadConfig, make_classifier

        config = VadConfig(backend=backend)
        self.segmenter = Segmenter(make_classifier(config), config)

    def run(self, audio: np.ndarray) -> tuple[float, int]:
        """Milliseconds spent and segments found."""
        self.segmenter.reset()
        start = time.perf_counter()
        found = 0
        for i in range(0, audio.size, VAD_BLOCK):
            found += len(self.segmenter.push(audio[i : i + VAD_BLOCK]))
        found += len(self.segmenter.flush())
        return _ms(start), found


def measure_vad(stream: np.ndarray, backends: list[str], repeats: int) -> dict:
    """Milliseconds of VAD compute per second of audio, per backend, over one long stream."""
    timers = {b: VadTimer(b) for b in backends}
    for t in timers.values():
        t.run(stream[: 2 * SAMPLE_RATE])  # warm-up
    per_s, segments = defaultdict(list), {}
    for rep in range(repeats):
        for b in rotated(list(timers), rep):
            ms, found = timers[b].run(stream)
            per_s[b].append(ms / (stream.size / SAMPLE_RATE))
            segments[b] = found
    return {b: {"ms_per_audio_s": summarize(per_s[b]), "segments": segments[b], "stream_s": stream.size / SAMPLE_RATE}
            for b in timers}


# ---------------------------------------------------------------------- per-stage latency


def measure_stages(runners: dict, clips: list[Clip], repeats: int, transcriber=None, vad: VadTimer | None = None) -> dict:
    """Per-stage and end-to-end latency of single utterances through VAD -> ASR -> emotion model.

    VAD and ASR run once per utterance and repetition and are shared by every variant in that
    round, so end-to-end = VAD + ASR + the variant's own stages, all measured in the same round.
    The emotion model gets the ASR transcript (the corpus text when ASR is off or hears nothing).
    """
    names = list(runners)
    per = {n: defaultdict(list) for n in names}
    shared = defaultdict(list)
    for rep in range(repeats):
        order = rotated(names, rep)
        for clip in clips:
            vad_ms = vad.run(clip.audio)[0] if vad else 0.0
            text, asr_ms = clip.text, 0.0
            if transcriber is not None:
                transcript = transcriber.transcribe(clip.audio)
                asr_ms, text = transcript.asr_ms, transcript.text or clip.text
            shared["vad"].append(vad_ms)
            shared["asr"].append(asr_ms)
            for name in order:
                _, t = runners[name].run_stages([clip.audio], [text])
                model_ms = sum(t.values())
                e2e = vad_ms + asr_ms + model_ms
                for stage, ms in t.items():
                    per[name][stage].append(ms)
                per[name]["model"].append(model_ms)
                per[name]["end_to_end"].append(e2e)
                per[name]["rtf"].append(e2e / (1000 * clip.seconds))
                per[name]["model_rtf"].append(model_ms / (1000 * clip.seconds))
    return {
        "utterances": len(clips),
        "repeats": repeats,
        "mean_utterance_s": float(np.mean([c.seconds for c in clips])) if clips else 0.0,
        "shared": {k: summarize(v) for k, v in shared.items()},
        "variants": {n: {k: summarize(v) for k, v in per[n].items()} for n in names},
    }


def measure_scaling(runners: dict, clips: list[Clip], lengths_s: list[float], repeats: int, transcriber=None) -> dict:
    """Median model and ASR time for clips of each length (joined real utterances)."""
    longer = {s: join_clips(clips, s) for s in lengths_s}
    names = list(runners)
    model = {n: defaultdict(list) for n in names}
    audio_enc = {n: defaultdict(list) for n in names}
    asr = defaultdict(list)
    for rep in range(repeats):
        for s, clip in longer.items():
            for name in rotated(names + (["asr"] if transcriber else []), rep):
                if name == "asr":
                    asr[s].append(transcriber.transcribe(clip.audio).asr_ms)
                    continue
                _, t = runners[name].run_stages([clip.audio], [clip.text])
                model[name][s].append(sum(t.values()))
                audio_enc[name][s].append(t["audio_encoder"])
    med = lambda d: [float(np.median(d[s])) for s in lengths_s]  # noqa: E731
    return {
        "lengths_s": list(lengths_s),
        "repeats": repeats,
        "variants": {n: {"model_ms_p50": med(model[n]), "audio_encoder_ms_p50": med(audio_enc[n]),
                         "model_rtf_p50": [m / (1000 * s) for m, s in zip(med(model[n]), lengths_s)]} for n in names},
        "asr_ms_p50": med(asr) if transcriber else None,
    }


REFERENCE_S = 3.0  # the reference utterance: 3 s of speech with a 12-word transcript, batch 1
REFERENCE_WORDS = 12


def reference_clip(clips: list[Clip]) -> Clip:
    """3 s of joined test utterances whose transcript is cut (or cycled) to exactly 12 words."""
    clip = join_clips(clips, REFERENCE_S)
    words = " ".join(c.text for c in clips).split()
    text = " ".join(words[i % len(words)] for i in range(REFERENCE_WORDS))
    return Clip(clip.audio, text, "reference")


def measure_reference(runners: dict, clips: list[Clip], repeats: int) -> dict:
    """Per-stage p50 (ms) of every variant on the reference utterance, interleaved round-robin."""
    clip = reference_clip(clips)
    names = list(runners)
    stages = {n: defaultdict(list) for n in names}
    for rep in range(repeats):
        for name in rotated(names, rep):
            _, t = runners[name].run_stages([clip.audio], [clip.text])
            for stage, ms in t.items():
                stages[name][stage].append(ms)
            stages[name]["model"].append(sum(t.values()))
            stages[name]["encoders_and_fusion"].append(sum(v for k, v in t.items() if k != "features"))
    return {
        "seconds": REFERENCE_S, "words": len(clip.text.split()), "text": clip.text, "repeats": repeats,
        "variants": {n: {k: float(np.median(v)) for k, v in by.items()} for n, by in stages.items()},
    }


def measure_throughput(runners: dict, clips: list[Clip], batch_sizes: list[int], repeats: int) -> dict:
    """Utterances per second over a folder of utterances, in batches of each size."""
    names = list(runners)
    for name in names:  # warm up every batch shape once
        for bs in batch_sizes:
            chunk = clips[:bs]
            runners[name].run_stages([c.audio for c in chunk], [c.text for c in chunk])
    rates = {n: defaultdict(list) for n in names}
    for rep in range(repeats):
        for bs in batch_sizes:
            for name in rotated(names, rep):
                start = time.perf_counter()
                for i in range(0, len(clips), bs):
                    chunk = clips[i : i + bs]
                    runners[name].run_stages([c.audio for c in chunk], [c.text for c in chunk])
                rates[name][bs].append(len(clips) / (time.perf_counter() - start))
    return {
        "utterances": len(clips),
        "audio_s": float(sum(c.seconds for c in clips)),
        "repeats": repeats,
        "variants": {n: {str(bs): {"utt_per_s": float(np.median(rates[n][bs])), "runs": rates[n][bs]}
                         for bs in batch_sizes} for n in names},
    }


# ---------------------------------------------------------------------- load time and memory


def run_worker(job: dict, timeout_s: float = 900) -> dict:
    """One fresh process loading one variant (see benchmarks/worker.py)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps(job)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"The load-time worker for {job.get('variant', job['kind'])} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_load(jobs: dict[str, dict], repeats: int) -> dict:
    """Median import, load and warm-up time and peak RSS of each variant, each in its own process."""
    runs = defaultdict(list)
    errors = {}
    for rep in range(repeats):
        for name in rotated(list(jobs), rep):
            if name in errors:
                continue
            try:
                runs[name].append(run_worker(jobs[name]))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                errors[name] = str(e)
    out = {}
    for name in jobs:
        if name in errors:
            out[name] = {"error": errors[name]}
            continue
        keys = runs[name][0].keys()
        out[name] = {k: float(np.median([r[k] for r in runs[name]])) for k in keys}
        out[name]["runs"] = len(runs[name])
    return out
