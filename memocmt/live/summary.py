"""Per-utterance results and the session summary (pure data and arithmetic)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from memocmt.results import Prediction

LATENCY_KEYS = ("denoise", "vad_wait", "queue", "asr", "asr_encoder", "audio_encode", "emotion", "eos_to_result")


def speaker_name(voice: int) -> str:
    """How results name a tracked voice (memocmt.speakers): S1, S2, ..."""
    return f"S{voice + 1}"


@dataclass
class UtteranceResult:
    """What the pipeline found in one utterance."""

    index: int  # 1-based, in the order utterances ended
    start_s: float  # stream time of the first speech frame
    end_s: float  # stream time where speech ended
    text: str  # the transcript ("" when ASR is off)
    prediction: Prediction | None  # None with --no-emotion
    timings_ms: dict[str, float]  # keys from LATENCY_KEYS that were measured
    forced_split: bool = False  # cut at the maximum utterance length
    speculative: bool = False  # recognised from a tentative segment, before the hangover ended
    audio: np.ndarray | None = field(default=None, repr=False)  # the utterance, for --save-audio
    language: str | None = None  # the language the utterance was transcribed in (detected with --language auto)
    revisions: list = field(default_factory=list, repr=False)  # earlier utterances classified again (memocmt.live.hindsight)

    def to_dict(self) -> dict:
        p = self.prediction
        return {
            "index": self.index,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "text": self.text,
            "label": p.label if p else None,
            "confidence": round(p.confidence, 4) if p else None,
            "runner_up": ({"label": p.runner_up[0], "confidence": round(p.runner_up[1], 4)} if p else None),
            "probabilities": {k: round(v, 4) for k, v in p.probabilities.items()} if p else None,
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
            "forced_split": self.forced_split,
            "speculative": self.speculative,
            "speaker": p.speaker if p else None,
            "language": self.language,
        }


@dataclass
class SessionSummary:
    """Totals for one session."""

    utterances: int
    emotions: dict[str, int]  # label -> count
    latency_ms: dict[str, dict[str, float]]  # stage -> {"p50", "p95", "max"}
    audio_s: float  # stream time covered
    overflows: int
    dropped_audio_s: float
    dropped_utterances: int  # segments dropped because recognition fell behind
    short_dropped: int  # segments shorter than the minimum speech length
    no_speech: int  # segments the ASR found no words in
    forced_splits: int
    peak_lag_s: float
    reopens: int
    end_reason: str
    speakers: dict[int, dict[str, int]] = field(default_factory=dict)  # tracked voice -> label -> count
    revised: int = 0  # utterances whose label hindsight changed (the counts above are the revised labels)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def lines(self) -> list[str]:
        """Plain-text rendering, one fact per line."""
        out = [f"session ended: {self.end_reason}", f"utterances: {self.utterances} in {self.audio_s:.1f} s of audio"]
        if self.emotions:
            total = sum(self.emotions.values())
            dist = ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in sorted(self.emotions.items(), key=lambda kv: -kv[1]))
            out.append(f"emotions: {dist}" + (f" ({self.revised} revised in hindsight)" if self.revised else ""))
        for voice, counts in sorted(self.speakers.items()):
            total = sum(counts.values())
            dist = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            out.append(f"  {speaker_name(voice)}: {total} utterance{'s' if total != 1 else ''}: {dist}")
        for stage, stats in self.latency_ms.items():
            out.append(f"latency {stage}: p50 {stats['p50']:.0f} ms, p95 {stats['p95']:.0f} ms, max {stats['max']:.0f} ms")
        out.append(
            f"overflows: {self.overflows}, dropped audio: {self.dropped_audio_s:.2f} s, "
            f"dropped utterances: {self.dropped_utterances}, peak lag: {self.peak_lag_s:.2f} s"
        )
        out.append(
            f"segments dropped as too short: {self.short_dropped}, without words: {self.no_speech}, "
            f"force-split: {self.forced_splits}, device reopened: {self.reopens}"
        )
        return out


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


class SummaryBuilder:
    """Accumulates results as they arrive; keeps only what the summary needs."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.emotions: collections.Counter[str] = collections.Counter()
        self.speakers: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.revised = 0

    def add(self, result: UtteranceResult) -> None:
        self.count += 1
        if result.prediction is not None:
            self.emotions[result.prediction.label] += 1
            if result.prediction.speaker is not None:
                self.speakers[result.prediction.speaker][result.prediction.label] += 1
        for key, value in result.timings_ms.items():
            self.latencies[key].append(value)

    def revise(self, revisions) -> None:
        """Count revised labels (memocmt.live.hindsight.Revision) instead of those shown at the time."""
        for r in revisions:
            if not r.changed:
                continue
            self.revised += 1
            self.emotions[r.previous.label] -= 1
            self.emotions[r.prediction.label] += 1
            if r.previous.speaker is not None:
                counts = self.speakers[r.previous.speaker]
                counts[r.previous.label] -= 1
                counts[r.prediction.label] += 1

    def build(self, **counters) -> SessionSummary:
        latency = {k: percentiles(self.latencies[k]) for k in LATENCY_KEYS if self.latencies.get(k)}
        return SessionSummary(utterances=self.count, emotions=dict(+self.emotions), latency_ms=latency,
                              speakers={v: dict(+c) for v, c in self.speakers.items()}, revised=self.revised,
                              **counters)
