"""The models every session shares, behind queues that keep them fair and busy.

    audio encoder  --MicroBatcher--  utterances of all sessions, and Whisper's own-length
                                     encoder passes (short-context ASR), grouped by length
    text encoder   --MicroBatcher--
    fusion head    --MicroBatcher--  each utterance with its own session's voice statistics
    Whisper        --FairQueue-----  sessions take turns; utterances of several sessions that
                                     wait together (of similar lengths, in one language) are
                                     decoded in one call

A session's state (VAD, voices, summary, language) never enters here: `Engine.recognize` takes the
session's `SpeakerTracker` and language as arguments. int8 bundles run their graphs one utterance at a
time (batching would change their answers, see memocmt.runtime), so their batchers take
batches of one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.languages import AUTO, whisper_language
from memocmt.live.asr import Transcript
from memocmt.results import Prediction
from memocmt.serve.batcher import FairQueue, MicroBatcher

log = logging.getLogger("memocmt")


class FusionItem(NamedTuple):
    """One utterance for the fusion head: its encodings, its voice's statistics, and its transcript's language
    (None: unknown), which decides whether the transcript is read (memocmt.language_policy)."""

    audio: Any
    text: Any
    stats: np.ndarray | None
    language: str | None = None


class EmotionBackend(Protocol):
    """Batched graph calls of an emotion model (the ONNX bundle, or a test double)."""

    labels: list[str]
    name: str
    audio_batchable: bool  # the audio encoder may take several utterances at once without changing answers
    head_batchable: bool  # ... the text encoder and the fusion head

    def encode_audio_batch(self, audios: list[np.ndarray]) -> list[Any]: ...

    def encode_text_batch(self, texts: list[str]) -> list[Any]: ...

    def audio_stats(self, encoding: Any) -> np.ndarray | None:
        """(1, 2, L, D) statistics of one encoding for speaker adaptation; None for a model without it."""

    def classify_batch(self, items: list[FusionItem]) -> list[Prediction]:
        """One prediction per item, each what the model gives that utterance alone in its language."""

    def hold(self, encoding: Any) -> Any:
        """A compact copy of one audio encoding, kept to classify the utterance again in hindsight
        (memocmt.live.hindsight); `classify_batch` takes it as it takes a fresh one."""

    def new_tracker(self, speakers: str) -> Any:
        """A fresh per-session memocmt.speakers.SpeakerTracker (None when the model does not adapt)."""

    def whisper_states(self, encoding: Any) -> np.ndarray | None:
        """Final-layer states (frames, d_model) of one encoding, if the encoder is Whisper's; else None."""


class Recognizer(Protocol):
    model_name: str
    context: str
    language: str | None  # the server's --language (None: detected; en for an English-only model)
    multilingual: bool  # False for an English-only (.en) model

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """One utterance in `language`: a code, "auto" (detected), or None (its own `language`), as
        memocmt.live.asr.Transcriber.transcribe."""

    # optional: `batchable(language) -> bool` and transcribe_batch(audios, language) -> one Transcript each, several
    # utterances in one call when batchable(language) is True (memocmt.live.asr.Transcriber)


@dataclass
class EngineConfig:
    max_batch: int = 8  # utterances per graph call (1: no batching)
    batch_wait_ms: float = 5.0  # how long the oldest item waits for company
    length_spread: float = 1.25  # longest/shortest audio in one batch (an utterance and its 1 s-padded ASR pass stay
    # apart), and in one Whisper decoding (each utterance is padded to the longest)
    max_queue: int = 256  # items waiting per graph before new work is refused
    asr_per_session: int = 4  # ASR jobs one session may have waiting
    asr_max_batch: int = 8  # utterances of different sessions Whisper decodes in one call when they wait (1: one at a time)


@dataclass
class Recognition:
    text: str
    prediction: Prediction | None
    timings_ms: dict[str, float]
    dropped: bool = False  # no words (with drop_empty): nothing to report
    speaker_stats: np.ndarray | None = None  # the utterance's own audio statistics (to commit a tentative one)
    language: str | None = None  # the transcript's language (detected with language "auto")
    encodings: tuple | None = None  # (audio, text) encodings on the host, to classify it again in hindsight
    language_probability: float = 0.0  # how sure the detection was (1.0 for a language given)


class Engine:
    """Shared ASR and emotion models for every session; thread-safe, async-friendly."""

    def __init__(self, emotion: EmotionBackend | None, transcriber_factory: Callable[[str], Recognizer] | None,
                 asr_context: str = "short", config: EngineConfig | None = None, metrics: Any = None):
        self.emotion = emotion
        self.config = config or EngineConfig()
        self.metrics = metrics
        self.asr_context = asr_context
        c = self.config
        self.audio_batcher = self.text_batcher = self.fusion_batcher = None
        if emotion is not None:
            head = c.max_batch if emotion.head_batchable else 1
            self.audio_batcher = MicroBatcher("audio", emotion.encode_audio_batch,
                                              c.max_batch if emotion.audio_batchable else 1, c.batch_wait_ms,
                                              c.max_queue, size=len, spread=c.length_spread,
                                              on_batch=self._observer("audio"))
            self.text_batcher = MicroBatcher("text", emotion.encode_text_batch, head, c.batch_wait_ms, c.max_queue,
                                             size=lambda t: 1 + len(t) // 32, spread=c.length_spread,
                                             on_batch=self._observer("text"))
            self.fusion_batcher = MicroBatcher("fusion", emotion.classify_batch, head, c.batch_wait_ms, c.max_queue,
                                               on_batch=self._observer("fusion"))
        self._factory: Callable[[str], Recognizer] | None = None
        self._transcribers: dict[str, Recognizer] = {}
        self._load_lock = threading.Lock()
        self.asr_queue: FairQueue | None = None
        if transcriber_factory is not None:
            self.enable_asr(transcriber_factory)

    def enable_asr(self, transcriber_factory: Callable[[str], Recognizer]) -> None:
        """Use `transcriber_factory(context)` for ASR (after construction, so a factory may attach
        `whisper_encoder()`); the default context's recogniser loads now, so errors surface at start-up."""
        self._factory = transcriber_factory
        c = self.config
        self.asr_queue = FairQueue("asr", self._transcribe, c.asr_per_session, max_batch=c.asr_max_batch,
                                   batch_fn=self._transcribe_batch, size=lambda job: len(job[-1]),
                                   spread=c.length_spread, group=self._asr_group, on_batch=self._observer("asr"))
        self.transcriber(self.asr_context)

    # ------------------------------------------------------------------ models

    def _observer(self, graph: str) -> Callable[[int, float], None]:
        def observe(size: int, seconds: float) -> None:
            if self.metrics is not None:
                self.metrics.batch(graph, size, seconds)
        return observe

    def whisper_encoder(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The emotion model's Whisper encoder as Transcriber.attach_encoder wants it, through the
        audio batcher, so ASR encoder passes batch with the emotion passes of every session."""
        if self.emotion is None or self.audio_batcher is None:
            return None
        probe = self.emotion.whisper_states(self.emotion.encode_audio_batch([np.zeros(SAMPLE_RATE, np.float32)])[0])
        if probe is None:
            return None

        def encode(samples: np.ndarray) -> np.ndarray:
            return self.emotion.whisper_states(self.audio_batcher(samples))

        def batch(audios: list[np.ndarray]) -> list[np.ndarray]:  # a batch of ASR passes, all queued at once
            jobs = [self.audio_batcher.submit(samples) for samples in audios]
            return [self.emotion.whisper_states(job.result()) for job in jobs]

        encode.batch = batch
        return encode

    def transcriber(self, context: str | None = None) -> Recognizer:
        """The recogniser for an ASR context ("short"/"full"), loaded on first use."""
        context = context or self.asr_context
        with self._load_lock:
            if context not in self._transcribers:
                self._transcribers[context] = self._factory(context)
            return self._transcribers[context]

    @property
    def labels(self) -> list[str]:
        return list(self.emotion.labels) if self.emotion is not None else []

    def meta(self, context: str | None = None) -> dict:
        """The model fields of every utterance line, as `memocmt-live --jsonl` writes them."""
        asr = self.transcriber(context) if self._factory is not None else None
        return {"asr_model": asr.model_name if asr else None, "model": getattr(self.emotion, "name", None),
                "asr_context": asr.context if asr else None, "asr_language": self.language(context=context)}

    def language(self, requested: str | None = None, context: str | None = None) -> str:
        """A session's spoken language: `requested` (its start message's: a code, or "auto"), else the server's
        --language, checked against the ASR model (memocmt.languages); a code, or "auto": detected. An English-only
        model is always "en". Raises memocmt.languages.LanguageError for one the model cannot transcribe."""
        asr = self.transcriber(context) if self._factory is not None else None
        if requested is None:
            requested = getattr(asr, "language", None)
        return whisper_language(requested, multilingual=getattr(asr, "multilingual", True),
                                model=getattr(asr, "model_name", "")) or AUTO

    def _transcribe(self, job: tuple[str, str | None, np.ndarray]) -> Transcript:
        context, language, audio = job
        return self.transcriber(context).transcribe(audio, language=language)

    def _asr_group(self, job: tuple[str, str | None, np.ndarray]) -> tuple[str, str | None] | None:
        """Jobs of one ASR context and language batch when its recogniser is loaded and decodes a batch in that
        language in one call (`batchable`); otherwise (None) each runs alone, so no result waits for another's."""
        context, language, _audio = job
        batchable = getattr(self._transcribers.get(context), "batchable", None)
        return (context, language) if batchable is not None and batchable(language) else None

    def _transcribe_batch(self, jobs: list[tuple[str, str | None, np.ndarray]]) -> list[Transcript]:
        """Utterances of several sessions, of one ASR context and language (`_asr_group`), in one call."""
        context, language, _audio = jobs[0]
        return self.transcriber(context).transcribe_batch([audio for _c, _l, audio in jobs], language=language)

    async def classify_again(self, audio_encoding: Any, text_encoding: Any, stats: np.ndarray | None,
                             language: str | None = None) -> Prediction:
        """The fusion head on encodings kept from earlier (hindsight), batched with every session's utterances;
        `language`: the transcript's, as when the utterance was first classified."""
        return await asyncio.wrap_future(self.fusion_batcher.submit(FusionItem(audio_encoding, text_encoding, stats,
                                                                               language)))

    def close(self) -> None:
        for worker in (self.audio_batcher, self.text_batcher, self.fusion_batcher, self.asr_queue):
            if worker is not None:
                worker.close()

    # ------------------------------------------------------------------ one utterance

    async def recognize(self, session: str, audio: np.ndarray, tracker: Any, context: str | None = None,
                        drop_empty: bool = True, commit: bool = True,
                        emotion_audio: np.ndarray | None = None, language: str | None = None) -> Recognition:
        """Transcript and emotion of one utterance of `session`, spoken in `language` (a code, or "auto": detected;
        the session's, see `language`; None: the server's --language); the audio encoder starts at once and runs while Whisper decodes, the text encoder and
        fusion head follow the transcript. With `commit=False` (a tentative segment) the session's speaker tracker
        is left as it was. `emotion_audio`: what the emotion model hears, if not all of `audio`
        (Segment.speech_audio)."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        encoded, encoded_at = None, []
        if self.emotion is not None:
            job = self.audio_batcher.submit(audio if emotion_audio is None else emotion_audio)
            job.add_done_callback(lambda _f: encoded_at.append(time.perf_counter()))
            encoded = asyncio.wrap_future(job)
        voice_job = None
        if getattr(tracker, "needs_audio", False):  # the speaker embedding runs while Whisper decodes
            voice_job = asyncio.get_running_loop().run_in_executor(None, tracker.signature, None, audio)
        text, spoken, probability = "", None, 0.0
        try:
            if self.asr_queue is not None:
                job = (context or self.asr_context, language, audio)
                transcript = await asyncio.wrap_future(self.asr_queue.submit(session, job))
                timings["asr"] = transcript.asr_ms
                text = transcript.text
                spoken = getattr(transcript, "language", None) or None
                probability = getattr(transcript, "language_probability", 0.0)
                if not text and drop_empty:
                    return Recognition("", None, timings, dropped=True)
            prediction = None
            if self.emotion is not None:
                t0 = time.perf_counter()
                text_future = asyncio.wrap_future(self.text_batcher.submit(text))
                audio_encoding = await encoded
                timings["audio_encode"] = (encoded_at[0] - started) * 1000  # queued + computed
                stats, voice = None, None
                raw_stats = self.emotion.audio_stats(audio_encoding)
                if tracker is not None and raw_stats is not None:
                    signature = await voice_job if voice_job is not None else None
                    stats, voice = tracker.update(raw_stats, commit=commit, signature=signature)
                text_encoding = await text_future
                prediction = await asyncio.wrap_future(
                    self.fusion_batcher.submit(FusionItem(audio_encoding, text_encoding, stats, spoken)))
                prediction.speaker = voice
                timings["emotion"] = (time.perf_counter() - t0) * 1000
                return Recognition(text, prediction, timings, speaker_stats=raw_stats, language=spoken,
                                   encodings=(audio_encoding, text_encoding), language_probability=probability)
            return Recognition(text, prediction, timings, language=spoken, language_probability=probability)
        finally:
            if encoded is not None and not encoded.done():
                encoded.cancel()


# ---------------------------------------------------------------------- the ONNX bundle


class BundleBackend:
    """`EmotionBackend` over a `memocmt.runtime.Bundle`: batch calls, split back into one encoding
    per utterance (on the host), and padded together again for the fusion head."""

    def __init__(self, bundle: Any, adapt_window: int = 20):
        from memocmt.runtime import AudioEncoding, TextEncoding

        self._audio_cls, self._text_cls = AudioEncoding, TextEncoding
        self.bundle = bundle
        self.name = str(bundle.path)
        self.labels = list(bundle.labels)
        self.adapt_window = adapt_window
        self.head_batchable = not bundle.item_by_item
        audio = bundle.manifest.get("audio") or {}
        self.audio_batchable = self.head_batchable and bool(audio.get("batchable"))
        self.tracks_voices = bool(bundle.speaker_norm) and bundle.voices is not None
        self._log_mel = (audio.get("feature_spec") or {}).get("kind") == "log_mel"

    def encode_audio_batch(self, audios: list[np.ndarray]) -> list[Any]:
        if not self.bundle.uses_audio:
            return [None] * len(audios)
        encoding = self.bundle.encode_audio_batch(audios)
        return _split(encoding, self._audio_cls)

    def encode_text_batch(self, texts: list[str]) -> list[Any]:
        if not self.bundle.uses_text:
            return [None] * len(texts)
        return _split(self.bundle.encode_text_batch(texts), self._text_cls)

    def audio_stats(self, encoding: Any) -> np.ndarray | None:
        if not self.bundle.speaker_norm or encoding is None:
            return None
        return self.bundle.audio_stats(encoding)

    def classify_batch(self, items: list[FusionItem]) -> list[Prediction]:
        """The bundle reads the transcripts of a batch or none of them (Bundle.classify_batch's `language`):
        the items are grouped by whether it reads theirs, one fusion call per group."""
        groups: dict[bool, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(self.bundle.reads_text(item.language), []).append(i)
        predictions: list[Prediction | None] = [None] * len(items)
        for indices in groups.values():
            for i, prediction in zip(indices, self._classify_group([items[i] for i in indices])):
                predictions[i] = prediction
        return predictions

    def _classify_group(self, items: list[FusionItem]) -> list[Prediction]:
        """Items the bundle treats alike (all transcripts read, or none): any one's language stands for all."""
        audio = _join([item.audio for item in items], self._audio_cls)
        text = _join([item.text for item in items], self._text_cls)
        stats = [item.stats for item in items]
        speaker_stats = None if any(s is None for s in stats) else np.concatenate(stats).astype(np.float32)
        return self.bundle.classify_batch(audio, text, speaker_stats, items[0].language)

    def hold(self, encoding: Any) -> Any:
        from memocmt.live.hindsight import host_copy

        return None if encoding is None else host_copy(encoding, _host)

    def new_tracker(self, speakers: str) -> Any:
        if not self.bundle.speaker_norm:
            return None
        from memocmt.speakers import SpeakerTracker

        from memocmt.voice import tracker_voices

        voices = tracker_voices(self.bundle.voices, speakers)
        return SpeakerTracker(voices, self.adapt_window, self.bundle.speaker_prior)

    def whisper_states(self, encoding: Any) -> np.ndarray | None:
        if encoding is None or not self._log_mel:
            return None
        return encoding.states[0, -1, : int(encoding.lengths[0])]


def _host(states: Any) -> np.ndarray:
    return states if isinstance(states, np.ndarray) else states.numpy()


def _split(encoding: Any, cls: type) -> list[Any]:
    """One encoding per utterance, each cut to its own length."""
    states = _host(encoding.states)
    return [cls(states[i : i + 1, :, : int(n)], encoding.lengths[i : i + 1], dict(encoding.timings_ms))
            for i, n in enumerate(encoding.lengths)]


def _join(encodings: list[Any], cls: type) -> Any:
    """Zero-pad single-utterance encodings along time into one batch (None if the modality is unused)."""
    if encodings[0] is None:
        return None
    if len(encodings) == 1:
        only = encodings[0]
        return only if only.states.dtype == np.float32 else cls(only.states.astype(np.float32), only.lengths, {})
    t_max = max(e.states.shape[2] for e in encodings)
    first = encodings[0].states
    states = np.zeros((len(encodings), first.shape[1], t_max, first.shape[3]), dtype=np.float32)  # held ones are float16
    for i, e in enumerate(encodings):
        states[i, :, : e.states.shape[2]] = e.states[0]
    return cls(states, np.concatenate([e.lengths for e in encodings]), {})
