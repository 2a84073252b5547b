"""Voice activity detection: frame classifiers and the utterance segmenter.

A classifier says whether one fixed-size frame is speech (`WebrtcClassifier`: webrtcvad,
10/20/30 ms frames; `SileroClassifier`: the silero-vad ONNX model, 512-sample frames).
`Segmenter` turns a stream of 16 kHz float32 blocks of any length into utterances with
pre-roll (so first words are kept), hangover (so short pauses do not split a sentence),
a minimum length (clicks are dropped) and a maximum length (a segment that never ends in
noise is force-split). Everything here is pure computation over arrays.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.live.errors import LiveError

log = logging.getLogger("memocmt")

WEBRTC_FRAME_MS = (10, 20, 30)  # the only frame lengths webrtcvad accepts
SILERO_FRAME = 512  # samples (32 ms at 16 kHz), the only chunk size silero-vad accepts
SILERO_CONTEXT = 64  # samples of the previous chunk the model sees in front of each chunk
VAD_BACKENDS = ("webrtc", "silero")


@dataclass
class VadConfig:
    """How speech is found and cut into utterances."""

    backend: str = "webrtc"  # "webrtc" (default, ~0.1 ms/s of audio) or "silero" (robust in noise)
    # webrtcvad 0 (keeps most) .. 3 (rejects most non-speech). 3: in babble at 20 dB SNR it gives 97 of 111 test clips
    # a segment of their own where 2 gave 42, and the same 111 of 111 on clean speech and in a reverberant room
    # (benchmarks/results/vad_noise)
    aggressiveness: int = 3
    frame_ms: int = 30  # webrtcvad frame: 10, 20 or 30 ms (silero always uses 32 ms)
    threshold: float = 0.5  # silero speech probability above which a frame is speech
    pre_roll_ms: int = 300  # audio kept before the first speech frame, so first words are not cut
    hangover_ms: int = 300  # silence that ends an utterance
    min_speech_ms: int = 250  # utterances with less speech than this are dropped
    max_utterance_s: float = 15.0  # longer speech is force-split
    speculate_ms: int = 120  # silence after which a tentative utterance is sent ahead (0: off)

    def validate(self) -> None:
        """Raise LiveError naming the first bad setting."""
        if self.backend not in VAD_BACKENDS:
            raise LiveError(f"Unknown VAD {self.backend!r}; choose one of {', '.join(VAD_BACKENDS)}.")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise LiveError(f"VAD aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness}.")
        if self.frame_ms not in WEBRTC_FRAME_MS:
            raise LiveError(f"VAD frame must be 10, 20 or 30 ms, not {self.frame_ms}.")
        if not 0.0 < self.threshold < 1.0:
            raise LiveError(f"VAD threshold must be between 0 and 1, not {self.threshold}.")
        for name in ("pre_roll_ms", "hangover_ms", "min_speech_ms", "speculate_ms"):
            if getattr(self, name) < 0:
                raise LiveError(f"{name} must not be negative.")
        if self.max_utterance_s <= self.min_speech_ms / 1000:
            raise LiveError("The maximum utterance length must be longer than the minimum speech length.")


class FrameClassifier(Protocol):
    frame_samples: int  # the exact frame size `is_speech` accepts

    def is_speech(self, frame: np.ndarray) -> bool: ...

    def reset(self) -> None: ...


class WebrtcClassifier:
    """webrtcvad on 16 kHz float32 frames of 10, 20 or 30 ms."""

    def __init__(self, aggressiveness: int = 2, frame_ms: int = 30):
        if frame_ms not in WEBRTC_FRAME_MS:
            raise ValueError(f"webrtcvad frames must be 10, 20 or 30 ms, not {frame_ms} ms.")
        try:
            import webrtcvad
        except ImportError as e:
            raise LiveError("webrtcvad is not installed; pip install webrtcvad-wheels.") from e
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000

    def is_speech(self, frame: np.ndarray) -> bool:
        if frame.shape != (self.frame_samples,):
            raise ValueError(
                f"webrtcvad frames must be {self.frame_samples} samples "
                f"({self.frame_samples * 1000 // SAMPLE_RATE} ms at 16 kHz), got shape {frame.shape}."
            )
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return self._vad.is_speech(pcm, SAMPLE_RATE)

    def reset(self) -> None:
        """webrtcvad keeps no state between frames that matters here."""


def silero_model_path() -> Path:
    """The ONNX model shipped in the silero-vad wheel, found without importing the package
    (its `__init__` imports PyTorch, which the live runtime does not need)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise LiveError("silero-vad is not installed; pip install silero-vad, or use --vad webrtc.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise LiveError(f"The silero-vad package has no ONNX model at {path}; reinstall silero-vad.")
    return path


class SileroClassifier:
    """The silero-vad ONNX model run with onnxruntime; keeps its recurrent state and context."""

    frame_samples = SILERO_FRAME

    def __init__(self, threshold: float = 0.5, model_path: Path | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise LiveError("onnxruntime is needed for --vad silero; pip install onnxruntime.") from e
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one chunk costs ~0.3 ms; more threads only add overhead
        options.inter_op_num_threads = 1
        path = model_path or silero_model_path()
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, SILERO_CONTEXT), dtype=np.float32)

    def probability(self, frame: np.ndarray) -> float:
        if frame.shape != (SILERO_FRAME,):
            raise ValueError(f"silero-vad needs chunks of exactly {SILERO_FRAME} samples at 16 kHz, got shape {frame.shape}.")
        x = np.concatenate([self._context, frame.reshape(1, -1).astype(np.float32)], axis=1)
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -SILERO_CONTEXT:]
        return float(out[0, 0])

    def is_speech(self, frame: np.ndarray) -> bool:
        return self.probability(frame) >= self.threshold


def make_classifier(config: VadConfig) -> FrameClassifier:
    config.validate()
    if config.backend == "silero":
        return SileroClassifier(config.threshold)
    return WebrtcClassifier(config.aggressiveness, config.frame_ms)


@dataclass
class Segment:
    """One utterance cut from the stream."""

    audio: np.ndarray  # float32 16 kHz: pre-roll + speech + trailing silence
    start_s: float  # stream time of the first speech frame
    end_s: float  # stream time where the last speech frame ends
    end_sample: int  # stream position of the end of the returned audio
    forced: bool = False  # cut because it reached the maximum length, not by silence
    tentative: bool = False  # sent ahead before the hangover ended; a final Segment follows

    def same_speech(self, other: "Segment") -> bool:
        """True when both cover the same speech (a tentative and its final differ only in trailing silence)."""
        return self.start_s == other.start_s and self.end_s == other.end_s

    @property
    def speech_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def speech_audio(self) -> np.ndarray:
        """The audio up to the end of the last speech frame: the pre-roll and the speech, without the
        silence that ended the utterance. What the emotion model hears, as `trim_to_speech` cuts
        the clips it was trained on (ASR gets all of `audio`)."""
        trailing = self.end_sample - round(self.end_s * SAMPLE_RATE)
        return self.audio[: len(self.audio) - trailing] if 0 < trailing < len(self.audio) else self.audio


@dataclass
class SegmenterStats:
    frames: int = 0
    segments: int = 0
    dropped_short: int = 0  # utterances shorter than min_speech_ms
    forced_splits: int = 0


class Segmenter:
    """Cuts a stream of 16 kHz float32 samples into utterances; call `reset()` between streams.

    With `speculate_ms`, an utterance is also sent ahead as `tentative` once that much
    silence follows it, so recognition can start while the hangover is still running; the
    final segment follows either way (with the same speech if nobody spoke again).
    """

    def __init__(self, classifier: FrameClassifier, config: VadConfig):
        config.validate()
        self.classifier = classifier
        self.config = config
        self.frame = classifier.frame_samples
        ms = lambda v: max(0, round(v * SAMPLE_RATE / 1000 / self.frame))  # ms -> whole frames
        self._pre_roll_frames = ms(config.pre_roll_ms)
        self._hangover_frames = max(1, ms(config.hangover_ms))
        self._min_speech = int(config.min_speech_ms * SAMPLE_RATE / 1000)
        self._max_frames = max(1, int(config.max_utterance_s * SAMPLE_RATE / self.frame))
        self._speculate_frames = ms(config.speculate_ms) if config.speculate_ms else 0
        self.reset()

    def reset(self) -> None:
        self.classifier.reset()
        self.stats = SegmenterStats()
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = 0  # stream sample index of the next frame
        self._pre_roll: collections.deque[np.ndarray] = collections.deque(maxlen=self._pre_roll_frames or 1)
        self._frames: list[np.ndarray] = []  # the current utterance, pre-roll included
        self._in_speech = False
        self._speech_start = 0  # sample index of the first speech frame
        self._speech_end = 0  # sample index where the last speech frame ends
        self._start_sample = 0  # sample index of self._frames[0]
        self._silence_run = 0  # frames of silence since the last speech frame

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def position(self) -> int:
        """Samples consumed so far (whole frames)."""
        return self._position

    def push(self, samples: np.ndarray) -> list[Segment]:
        """Feed 1-D float32 16 kHz samples of any length; returns the utterances that ended."""
        if samples.ndim != 1:
            raise ValueError(f"The segmenter takes 1-D mono samples, got shape {samples.shape}.")
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(data) // self.frame
        self._pending = data[n * self.frame :]
        out: list[Segment] = []
        for i in range(n):
            segment = self._step(data[i * self.frame : (i + 1) * self.frame])
            if segment is not None:
                out.append(segment)
        return out

    def flush(self) -> list[Segment]:
        """End of stream: return the utterance in progress if it is long enough."""
        segment = self._finish() if self._in_speech else None
        self._pending = np.zeros(0, dtype=np.float32)
        return [segment] if segment is not None else []

    def skip_to(self, position: int) -> None:
        """Continue at stream sample `position` after a gap (dropped audio); call `flush` first."""
        if position < self._position:
            raise ValueError(f"Cannot skip back from sample {self._position} to {position}.")
        self._in_speech = False
        self._frames = []
        self._pre_roll.clear()
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = position

    def _step(self, frame: np.ndarray) -> Segment | None:
        speech = self.classifier.is_speech(frame)
        start = self._position
        self._position += self.frame
        self.stats.frames += 1
        if not self._in_speech:
            if not speech:
                if self._pre_roll_frames:
                    self._pre_roll.append(frame)
                return None
            pre = list(self._pre_roll) if self._pre_roll_frames else []
            self._pre_roll.clear()
            self._frames = pre + [frame]
            self._start_sample = start - len(pre) * self.frame
            self._in_speech = True
            self._speech_start = start
            self._speech_end = self._position
            self._silence_run = 0
            return None
        self._frames.append(frame)
        if speech:
            self._speech_end = self._position
            self._silence_run = 0
        else:
            self._silence_run += 1
        if self._silence_run >= self._hangover_frames:
            return self._finish()
        if (self._position - self._speech_start) // self.frame >= self._max_frames:
            return self._force_split()
        if (
            self._speculate_frames
            and self._silence_run == self._speculate_frames
            and self._speech_end - self._speech_start >= self._min_speech
        ):
            return Segment(
                audio=np.concatenate(self._frames),
                start_s=self._speech_start / SAMPLE_RATE,
                end_s=self._speech_end / SAMPLE_RATE,
                end_sample=self._position,
                tentative=True,
            )
        return None

    def _finish(self) -> Segment | None:
        self._in_speech = False
        frames, self._frames = self._frames, []
        if self._pre_roll_frames:  # the trailing silence is the next utterance's pre-roll
            self._pre_roll.extend(frames[-self._pre_roll_frames :])
        if self._speech_end - self._speech_start < self._min_speech:
            self.stats.dropped_short += 1
            log.debug("dropped a %d ms utterance", (self._speech_end - self._speech_start) * 1000 // SAMPLE_RATE)
            return None
        self.stats.segments += 1
        return Segment(
            audio=np.concatenate(frames),
            start_s=self._speech_start / SAMPLE_RATE,
            end_s=self._speech_end / SAMPLE_RATE,
            end_sample=self._position,
        )

    def _force_split(self) -> Segment:
        frames, self._frames = self._frames, []
        self.stats.segments += 1
        self.stats.forced_splits += 1
        segment = Segment(
            audio=np.concatenate(frames),
            start_s=self._speech_start / SAMPLE_RATE,
            end_s=self._speech_end / SAMPLE_RATE,
            end_sample=self._position,
            forced=True,
        )
        # Speech goes on: the next utterance starts right here, without pre-roll.
        self._speech_start = self._start_sample = self._position
        self._speech_end = self._position
        self._silence_run = 0
        return segment


def trim_to_speech(audio: np.ndarray, config: VadConfig | None = None,
                   within: tuple[int, int] | None = None) -> np.ndarray:
    """A recorded utterance cut as the live segmenter cuts speech from a stream for the emotion model
    (`Segment.speech_audio`): from the pre-roll before its first speech frame to the end of its
    last (pauses inside are kept, so a clip the live path would split stays one utterance). Training and evaluation of a model whose
    config has `trim: vad` see clips this way, so that their speaker statistics, voice signatures
    and prior match what live segments give. `within` (first, end sample): the utterance's own span in
    `audio`, which also holds a noisy context around it; segments wholly outside it (noise the VAD takes for
    speech) are not the utterance, as live they are results of their own. Audio in which the VAD finds no
    speech is returned unchanged (its `within` span, if given)."""
    config = config or VadConfig(aggressiveness=TRIM_AGGRESSIVENESS)
    if config.speculate_ms or config.max_utterance_s < 1e6:
        config = dataclasses.replace(config, speculate_ms=0, max_utterance_s=1e9)
    audio = np.asarray(audio, dtype=np.float32)
    segmenter = Segmenter(make_classifier(config), config)
    lead = np.zeros(segmenter._pre_roll_frames * segmenter.frame, dtype=np.float32)  # silence before the clip, as in a stream
    tail = np.zeros((segmenter._hangover_frames + 1) * segmenter.frame, dtype=np.float32)
    segments = segmenter.push(np.concatenate([lead, audio, tail])) + segmenter.flush()
    if within is not None:
        segments = [s for s in segments if round(s.start_s * SAMPLE_RATE) - len(lead) < within[1]
                    and round(s.end_s * SAMPLE_RATE) - len(lead) > within[0]]
    if not segments:
        return audio if within is None else audio[within[0]: within[1]]
    first = max(0, round(segments[0].start_s * SAMPLE_RATE) - len(lead) - segmenter._pre_roll_frames * segmenter.frame)
    last = min(len(audio), round(segments[-1].end_s * SAMPLE_RATE) - len(lead))
    return audio[first:last] if last - first > 0 else audio


TRIM_AGGRESSIVENESS = 3  # the webrtcvad setting of the "vad" cut: the live default (earlier models were cut at 2)
TRIMS = ("none", "vad")  # how a model's training and evaluation cut recorded clips (MemoCMTConfig.trim)
# what the "vad" cut is, for cache keys: clips cut to the end of speech at aggressiveness 3 (earlier: at 2; before
# that, to the end of the hangover)
TRIM_VERSIONS = {"vad": "vad-speech-end-a3"}


def apply_trim(audio: np.ndarray, trim: str, within: tuple[int, int] | None = None) -> np.ndarray:
    """`audio` as a model with `trim` sees a recorded clip: as it is ("none") or cut to speech ("vad");
    `within`: the clip's own span when `audio` also holds a context around it (see trim_to_speech)."""
    if trim == "none":
        return audio if within is None else audio[within[0]: within[1]]
    if trim == "vad":
        return trim_to_speech(audio, within=within)
    raise ValueError(f"Unknown trim {trim!r}; choose one of {', '.join(TRIMS)}.")
