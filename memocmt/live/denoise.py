"""The denoise stage: the stream enhanced (memocmt.denoise) beside the stream as captured.

The stage sits between capture and the VAD. It passes both signals on sample-aligned: the VAD
is fed the one it was given (`targets`), and when an utterance is cut, ASR and the emotion model
each get the same stretch of stream from the signal chosen for them. Positions are those of the
captured stream, so utterance times are unchanged; the enhanced signal arrives later than the
captured one (the denoiser's algorithmic delay and its resampling filters), and the stage holds
the captured samples back by as much so the two stay together.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.denoise import DENOISERS, DenoiseError, StreamingDenoiser
from memocmt.live.errors import LiveError

TARGETS = ("vad", "asr", "emotion")  # the stages that can hear the enhanced signal
DEFAULT_TARGETS = ("emotion",)  # what --denoise enhances unless --denoise-for says otherwise: the best routing measured (docs/live.md)
HISTORY_S = 40.0  # stream kept for cutting utterances out of the signal the VAD does not hear


def parse_targets(text: str) -> tuple[str, ...]:
    """'vad,asr,emotion' (any of them, or 'none') as a tuple in pipeline order; one LiveError sentence if bad."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["none"]:
        return ()
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        raise LiveError(f"--denoise-for {text!r}: list one or more of {', '.join(TARGETS)} separated by commas (or 'none').")
    return tuple(t for t in TARGETS if t in names)


@dataclass
class _Chunk:
    start: int  # stream position of the first sample
    raw: np.ndarray
    enhanced: np.ndarray
    ms: float  # denoiser compute time spent producing it


class DenoiseStage:
    """Feeds the VAD and cuts utterances for ASR and the emotion model from the raw or the enhanced stream."""

    def __init__(self, denoiser: StreamingDenoiser, targets: tuple[str, ...] = DEFAULT_TARGETS,
                 history_s: float = HISTORY_S):
        unknown = set(targets) - set(TARGETS)
        if unknown:
            raise ValueError(f"Unknown denoise targets {sorted(unknown)}; choose from {TARGETS}.")
        self.denoiser = denoiser
        self.targets = tuple(targets)
        self.history = int(history_s * SAMPLE_RATE)
        self.reset(0)

    def reset(self, position: int) -> None:
        """A new stream from stream sample `position` on (after a gap): fresh denoiser state."""
        self.denoiser.reset()
        self._raw = np.zeros(0, dtype=np.float32)  # captured samples waiting for their enhanced twins
        self._position = position  # stream position of the next aligned sample
        self._chunks: collections.deque[_Chunk] = collections.deque()

    @property
    def position(self) -> int:
        """Stream position up to which both signals are available."""
        return self._position

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Captured samples in; the VAD's signal out, for the stream positions now available in both."""
        ms = self.denoiser.ms
        enhanced = self.denoiser.push(samples)
        return self._aligned(samples, enhanced, self.denoiser.ms - ms)

    def flush(self) -> np.ndarray:
        """End of stream (or a gap): the rest of the VAD's signal."""
        ms = self.denoiser.ms
        enhanced = self.denoiser.flush()
        return self._aligned(np.zeros(0, dtype=np.float32), enhanced, self.denoiser.ms - ms)

    def _aligned(self, samples: np.ndarray, enhanced: np.ndarray, ms: float) -> np.ndarray:
        raw = np.concatenate([self._raw, np.asarray(samples, dtype=np.float32)])
        n = len(enhanced)
        chunk = _Chunk(self._position, raw[:n], enhanced, ms)
        self._raw = raw[n:]
        self._position += n
        if n:
            self._chunks.append(chunk)
        while self._chunks and self._chunks[0].start + len(self._chunks[0].raw) < self._position - self.history:
            self._chunks.popleft()
        return chunk.enhanced if "vad" in self.targets else chunk.raw

    def audio_for(self, target: str, start: int, end: int) -> np.ndarray:
        """Stream samples [start, end) of the signal `target` ("asr", "emotion", "vad") hears."""
        enhanced = target in self.targets
        parts = []
        for c in self._chunks:
            lo, hi = max(start, c.start), min(end, c.start + len(c.raw))
            if lo < hi:
                parts.append((c.enhanced if enhanced else c.raw)[lo - c.start: hi - c.start])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def ms_between(self, start: int, end: int) -> float:
        """Denoiser compute time spent on the chunks that overlap stream samples [start, end)."""
        return sum(c.ms for c in self._chunks if c.start < end and c.start + len(c.raw) > start)


def make_denoise_stage(kind: str, targets: tuple[str, ...] = DEFAULT_TARGETS) -> DenoiseStage | None:
    """The stage for `--denoise KIND` (None for 'off'); every failure is one LiveError sentence."""
    if kind == "off":
        return None
    if kind not in DENOISERS:
        raise LiveError(f"Unknown denoiser {kind!r}; choose one of {', '.join(DENOISERS)}.")
    try:
        return DenoiseStage(StreamingDenoiser(kind), targets)
    except DenoiseError as e:
        raise LiveError(str(e)) from e
