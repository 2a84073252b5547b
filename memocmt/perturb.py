"""Perturbation of training audio: more voices from the same speakers, and the rooms they speak in.

A speaker-independent emotion model learns from few speakers (RAVDESS: 16 actors to train on),
and what it must not learn is who is speaking. Perturbed copies of each training utterance
(sox's `speed`, which scales pitch, formants and tempo together, and `pitch`, which moves pitch
and formants at constant tempo) sound like other voices saying the same thing with the same
emotion. Each copy counts as a new speaker: its own speaker statistics for a speaker_norm head,
and in cross-validation the fold of the speaker it was made from, so no held-out speaker leaks
into training.

Specs are sox effect lines: "speed 0.9", "speed 1.1", "pitch -200", "pitch 200" (cents),
"tempo 1.1"; or acoustic conditions (memocmt.degrade: "pink 5:30", "babble 5:25",
"room 0.2:1 0.5:4"), each clip with its own SNR, RT60 and distance drawn from the ranges, seeded
by the file name so the copy is the same on every run. A noisy copy of a speaker is a voice of its
own too: its speaker statistics are those of that speaker in that kind of room, which is what
live adaptation pools when a person talks in one. Babble is made from the other training clips
(`Acoustic.with_sources`). Perturbation runs only on frozen-encoder training, where each copy is
encoded once and cached like any other utterance (memocmt.trainer.embed_cache).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError
from .degrade import KINDS, Condition, ConditionError

BABBLE_SOURCES = 64  # clips the babble of a training run is made from (a fixed, seeded choice)
# silence around a clip that an acoustic condition fills too: live, noise and a room's tail run through the pauses
# around an utterance, and the segmenter cuts the utterance out of that (see as_trained)
NOISE_CONTEXT_S = 1.0

# effect -> (smallest, largest) amount that still sounds like speech
EFFECTS = {"speed": (0.5, 2.0), "tempo": (0.5, 2.0), "pitch": (-1200.0, 1200.0)}


class PerturbError(ValueError):
    """A perturbation spec that cannot be used, or sox missing or failing."""


@dataclass(frozen=True)
class Perturbation:
    effect: str  # "speed" | "tempo" | "pitch"
    amount: float  # factor for speed and tempo, cents for pitch

    @classmethod
    def parse(cls, spec: str) -> "Perturbation":
        parts = str(spec).split()
        if len(parts) != 2 or parts[0] not in EFFECTS:
            raise PerturbError(f"Audio perturbation {spec!r} is not '<effect> <amount>' with effect one of "
                               f"{', '.join(EFFECTS)} (e.g. 'speed 0.9', 'pitch -200').")
        try:
            amount = float(parts[1])
        except ValueError:
            raise PerturbError(f"Audio perturbation {spec!r}: {parts[1]!r} is not a number.") from None
        low, high = EFFECTS[parts[0]]
        if not low <= amount <= high or (parts[0] != "pitch" and amount == 1.0) or (parts[0] == "pitch" and amount == 0):
            raise PerturbError(f"Audio perturbation {spec!r}: the {parts[0]} amount must lie in [{low:g}, {high:g}] "
                               "and change something.")
        return cls(parts[0], amount)

    @property
    def spec(self) -> str:
        return f"{self.effect} {self.amount:g}"

    @property
    def cache_key(self) -> str:
        """What a cached copy depends on."""
        return self.spec

    @property
    def name(self) -> str:
        """Short tag for ids and speaker names: 'speed0.9', 'pitch-200'."""
        return f"{self.effect}{self.amount:g}"

    def apply(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, key: str = "") -> np.ndarray:
        """The perturbed float32 mono audio at the same sample rate (sox, through pipes); `key` is unused
        (sox effects draw nothing)."""
        if shutil.which("sox") is None:
            raise PerturbError("Audio perturbation needs the sox command; install it with `apt-get install sox`.")
        raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sample_rate)]
        cmd = ["sox", "-q", "-D", *raw, "-", *raw, "-", self.effect, f"{self.amount:g}", "rate", str(sample_rate)]
        result = subprocess.run(cmd, input=np.ascontiguousarray(audio, dtype="<f4").tobytes(), capture_output=True, check=False)
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioError(f"sox {self.spec} failed: {message[-1] if message else 'exit ' + str(result.returncode)}.")
        out = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
        return np.clip(out, -1.0, 1.0)


@dataclass(frozen=True)
class Acoustic:
    """An acoustic condition (memocmt.degrade) as a training perturbation."""

    condition: Condition
    sources: tuple[str, ...] = ()  # babble: clips of training speakers (paths)

    @classmethod
    def parse(cls, spec: str) -> "Acoustic":
        try:
            return cls(Condition.parse(spec))
        except ConditionError as e:
            raise PerturbError(str(e)) from None

    @property
    def spec(self) -> str:
        """The condition, and for babble which clips it is made of (so cached copies follow the clips)."""
        if not self.sources:
            return self.condition.spec
        digest = hashlib.sha1("\0".join(sorted(Path(s).name for s in self.sources)).encode()).hexdigest()[:8]
        return f"{self.condition.spec} @{digest}"

    @property
    def cache_key(self) -> str:
        """What a cached copy depends on: the spec, and the context the condition fills around the clip (as_trained)."""
        return f"{self.spec} ctx={NOISE_CONTEXT_S:g}s"

    @property
    def name(self) -> str:
        return self.condition.name

    def with_sources(self, paths: list[str]) -> "Acoustic":
        """This perturbation with babble made from a seeded choice of BABBLE_SOURCES of `paths` (no-op otherwise)."""
        if not self.condition.needs_sources:
            return self
        paths = sorted({str(p) for p in paths}, key=lambda p: Path(p).name)
        if len(paths) < 2:
            raise PerturbError(f"Perturbation {self.condition.spec!r} makes babble from other training clips, but the "
                               "training data has fewer than two.")
        chosen = np.random.default_rng(0).choice(len(paths), min(BABBLE_SOURCES, len(paths)), replace=False)
        return replace(self, sources=tuple(paths[i] for i in sorted(chosen)))

    def apply(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, key: str = "") -> np.ndarray:
        """The clip in this condition; `key` (the file name) seeds its draw."""
        if self.condition.needs_sources and not self.sources:
            raise PerturbError(f"Perturbation {self.condition.spec!r} needs babble clips; give them with with_sources().")
        sources = [_source_audio(s) for s in self.sources]
        return self.condition.apply(audio, key=key, sources=sources, sample_rate=sample_rate)


def as_trained(audio: np.ndarray, perturbation: "Perturbation | Acoustic | None", trim: str, key: str) -> np.ndarray:
    """A recorded clip as a model with `trim` (MemoCMTConfig.trim) is trained and scored on it, in `perturbation`
    (None: as recorded; `key`, the file name, seeds its draw). An acoustic condition also fills NOISE_CONTEXT_S of
    silence on each side of the clip, and the cut then finds the utterance in that as the live segmenter finds it
    in a stream: babble next to the speech can lengthen it, babble alone is another utterance."""
    from .live.vad import apply_trim

    within = None
    if isinstance(perturbation, Acoustic):
        pad = int(round(NOISE_CONTEXT_S * SAMPLE_RATE))
        within = (pad, pad + len(audio))
        audio = np.pad(audio, (pad, pad))
    if perturbation is not None:
        audio = perturbation.apply(audio, key=key)
    return apply_trim(audio, trim, within)


@functools.lru_cache(maxsize=2 * BABBLE_SOURCES)
def _source_audio(path: str) -> np.ndarray:
    from .audio import check_audio, load_audio

    return check_audio(load_audio(path), name=path)


def parse_perturbation(spec: str) -> "Perturbation | Acoustic":
    """A sox voice perturbation or an acoustic condition, by the spec's first word."""
    return Acoustic.parse(spec) if str(spec).split()[:1] and str(spec).split()[0] in KINDS else Perturbation.parse(spec)


def parse_perturbations(specs: list[str]) -> "list[Perturbation | Acoustic]":
    """Parsed specs, refusing repeats."""
    out = [parse_perturbation(s) for s in specs]
    if len(set(out)) != len(out):
        raise PerturbError(f"Audio perturbations {list(specs)} repeat one; list each once.")
    return out


def perturbed_speaker(speaker: tuple[str, str], perturbation: "Perturbation | Acoustic") -> tuple[str, str]:
    """The (corpus, speaker) key of a speaker's perturbed copies: a voice of its own."""
    return speaker[0], f"{speaker[1]}~{perturbation.name}"
