"""One websocket stream: its own PCM decoder, resampler, VAD, voices, queue and summary.

`StreamSession.feed` runs on the event loop for every binary frame: it decodes the PCM
(keeping a sample split across frames for the next one), mixes to mono, resamples to
16 kHz and runs the VAD, which costs well under a millisecond per second of audio. Each
utterance the VAD closes goes into the session's bounded queue; the session's recognition
task takes them in order and awaits the shared `Engine`. A tentative utterance (sent ahead
before the hangover ended) is recognised only when nothing newer waits, and its result is
reused when the final utterance covers the same speech (memocmt.live.speculation), as in
memocmt.live.pipeline.

Each session keeps its spoken language (`StreamSession.language`): the one its `start` message names,
else the server's `--language`, else "auto": the language of its utterances is then detected (from their own encoder pass, else with
Whisper's 30 s window) until one detection is sure (memocmt.live.asr.sure_language); from then on they
are transcribed in that language, with short context, as `memocmt-live --language
auto` does (unlike memocmt-live, an utterance that falls back to the 30 s window is then transcribed
in it too, not detected again). One session's language never changes another's: the shared
transcriber takes it with each utterance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.languages import AUTO, LanguageError
from memocmt.live.asr import sure_language
from memocmt.live.hindsight import Hindsight, Kept, Revision
from memocmt.live.speculation import Pending, Speculation, reuse
from memocmt.live.summary import SummaryBuilder, UtteranceResult
from memocmt.live.vad import Segment, Segmenter, VadConfig
from memocmt.serve.batcher import Overloaded
from memocmt.serve.engine import Engine
from memocmt.serve.protocol import ProtocolError, StartOptions

log = logging.getLogger("memocmt")

_END = object()


@dataclass
class SessionLimits:
    queue_depth: int = 8  # utterances waiting for recognition in one session
    max_session_s: float = 3600.0  # audio one session may stream


@dataclass
class ServerConfig:
    """Bounds of a server and what every session gets."""

    max_sessions: int = 8  # sessions streaming at once; the next client gets `busy` (close code 1013)
    max_frame_bytes: int = 1 << 18  # one binary frame (256 KiB: 8 s of 16 kHz PCM16)
    idle_timeout_s: float = 30.0  # a session that sends nothing for this long is closed
    send_timeout_s: float = 10.0  # a client that does not take a message within this long is dropped
    token: str | None = None  # required on /ws and /metrics when set (bearer header or ?token=)
    limits: SessionLimits = field(default_factory=SessionLimits)
    vad: VadConfig = field(default_factory=VadConfig)


class PcmDecoder:
    """Raw PCM bytes of any framing -> float32 mono at 16 kHz."""

    def __init__(self, options: StartOptions):
        self.options = options
        self._carry = b""  # bytes of an incomplete sample frame
        self._resampler = None
        if options.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(options.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def decode(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        whole = len(data) - len(data) % self.options.frame_bytes
        self._carry = data[whole:]
        if self.options.format == "pcm_s16le":
            samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = np.frombuffer(data[:whole], dtype="<f4").astype(np.float32)
            samples = np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        if self.options.channels > 1:
            samples = samples.reshape(-1, self.options.channels).mean(axis=1)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=False)
        return samples

    def flush(self) -> np.ndarray:
        self._carry = b""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._resampler = None
        return tail


class StreamSession:
    """A client's stream; `send` delivers one message to that client (and may raise when it is gone).
    Raises ProtocolError for a `language` the server's Whisper cannot transcribe."""

    def __init__(self, session_id: str, options: StartOptions, engine: Engine, segmenter: Segmenter,
                 send: Callable[[dict], Awaitable[None]], record: Callable[[UtteranceResult], dict],
                 limits: SessionLimits | None = None, metrics: Any = None):
        try:
            self.language = engine.language(options.language, options.asr_context)  # a code, or "auto" until detected
        except LanguageError as e:
            raise ProtocolError(str(e)) from None
        self.id = session_id
        self.options = options
        self.engine = engine
        self.segmenter = segmenter
        self.send = send
        self.record = record  # UtteranceResult -> the JSONL fields
        self.limits = limits or SessionLimits()
        self.metrics = metrics
        self.decoder = PcmDecoder(options)
        self.tracker = engine.emotion.new_tracker(options.speakers) if engine.emotion is not None else None
        self._tentative_stats = None  # audio statistics of a tentative utterance, counted once it is confirmed
        self.hindsight = (Hindsight(self.tracker.window) if self.tracker is not None and options.hindsight else None)
        self._encodings: dict[int, tuple] = {}  # id(result) -> (audio, text, language) while it waits for an index
        self.summary = SummaryBuilder()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, self.limits.queue_depth))
        self.samples = 0  # 16 kHz samples received
        self.max_samples = int(self.limits.max_session_s * SAMPLE_RATE)
        self.dropped_utterances = 0
        self.dropped_audio_s = 0.0
        self.no_speech = 0
        self.end_reason = "running"
        self.meta: dict = {}  # the fields every utterance line carries (device, models), set by the server
        self._index = 0
        self._stopped = False
        self._task: asyncio.Task | None = None

    @property
    def tracks_speakers(self) -> bool:
        return self.tracker is not None and getattr(self.tracker, "voices", None) is not None

    @property
    def audio_s(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def full(self) -> bool:
        """True when no more audio may be accepted (the session reached its maximum length)."""
        return self.samples >= self.max_samples

    @property
    def failed(self) -> bool:
        """True when the recognition task ended before `stop` (a model failed or the client is gone)."""
        return self._task is not None and self._task.done() and not self._stopped

    def start(self) -> None:
        self._task = asyncio.create_task(self._recognize_loop(), name=f"memocmt-session-{self.id}")

    # ---------------------------------------------------------------- audio in

    async def feed(self, data: bytes) -> None:
        """Decode, resample and segment one binary frame; queue the utterances it ended."""
        arrival = time.monotonic()
        samples = self.decoder.decode(data)
        samples = samples[: max(0, self.max_samples - self.samples)]
        await self._push(samples, arrival)

    async def _push(self, samples: np.ndarray, arrival: float) -> None:
        self.samples += len(samples)
        if self.metrics is not None:
            self.metrics.audio_received(len(samples) / SAMPLE_RATE)
        segments = self.segmenter.push(samples) if samples.size else []
        block_end = self.segmenter.position  # samples the VAD consumed so far
        for segment in segments:
            await self._emit(segment, arrival, block_end)

    async def _emit(self, segment: Segment, arrival: float, block_end: int) -> None:
        item = Pending.closed(segment, arrival, block_end)
        if self._task is not None and self._task.done():
            return  # nobody consumes the queue any more; the server reports why
        if self.options.overflow == "wait":
            await self.queue.put(item)  # stops reading this client's socket until there is room
            return
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                lost = self.queue.get_nowait()
                if lost is not _END and not lost.segment.tentative:
                    self._dropped(lost.segment)

    def _dropped(self, segment: Segment) -> None:
        self.dropped_utterances += 1
        self.dropped_audio_s += len(segment.audio) / SAMPLE_RATE
        if self.metrics is not None:
            self.metrics.dropped(len(segment.audio) / SAMPLE_RATE)
        log.info("session %s: recognition is behind; dropped the utterance at %.1f s", self.id, segment.start_s)

    async def stop(self, reason: str = "stopped") -> None:
        """No more audio: flush the resampler and the utterance in progress, and let the queue drain."""
        if self._stopped:
            return
        self._stopped = True
        self.end_reason = reason
        tail = self.decoder.flush()
        if tail.size and not self.full:
            await self._push(tail, time.monotonic())
        for segment in self.segmenter.flush():
            await self._emit(segment, time.monotonic(), self.segmenter.position)
        if self._task is not None and not self._task.done():
            await self.queue.put(_END)

    async def finished(self) -> None:
        """Wait until every queued utterance was recognised and sent."""
        if self._task is not None:
            await self._task

    def cancel(self) -> None:
        """The client is gone: stop recognising and release the shared queues."""
        if self._task is not None:
            self._task.cancel()
        if self.engine.asr_queue is not None:
            self.engine.asr_queue.discard(self.id)

    # ---------------------------------------------------------------- recognition

    async def _recognize_loop(self) -> None:
        speculation = Speculation()
        while True:
            item = await self.queue.get()
            if item is _END:
                if self.hindsight is not None:
                    await self._revise([r for voice, kept in self.hindsight.remaining().items()
                                        for r in await self._classify_again(voice, kept)])
                return
            segment = item.segment
            if segment.tentative:
                if self.queue.empty():
                    speculation.hold(segment, await self._recognize(item))
                continue
            speculated = speculation.take(segment)
            result = await self._recognize(item) if speculated is None else self._confirm(speculated.result, item)
            if result is None:
                continue
            self._index += 1
            result.index = self._index
            self.summary.add(result)
            if self.metrics is not None:
                self.metrics.utterance(result.timings_ms)
            await self.send({"type": "utterance", **self.record(result)})
            await self._settle(result)

    async def _recognize(self, item: Pending) -> UtteranceResult | None:
        segment = item.segment
        timings = item.wait_ms(time.monotonic())
        try:
            found = await self.engine.recognize(
                self.id, segment.audio, self.tracker, self.options.asr_context,
                commit=not segment.tentative, emotion_audio=segment.speech_audio, language=self.language)
        except Overloaded as e:
            self._dropped(segment)
            log.warning("session %s: %s", self.id, e)
            return None
        if self.language == AUTO and (detected := sure_language(found)) is not None:
            log.info("session %s: %s detected (p %.2f); its utterances are transcribed in it from now on", self.id,
                     detected, found.language_probability)
            self.language = detected
        timings.update(found.timings_ms)
        if found.dropped:
            if not segment.tentative:
                self.no_speech += 1
            return None
        timings["eos_to_result"] = (time.monotonic() - item.eos_wall) * 1000
        self._tentative_stats = found.speaker_stats if segment.tentative else None
        result = UtteranceResult(index=0, start_s=segment.start_s, end_s=segment.end_s, text=found.text,
                                 prediction=found.prediction, timings_ms=timings, forced_split=segment.forced,
                                 language=found.language)
        if self.hindsight is not None and found.encodings is not None:
            self._encodings = {id(result): (*found.encodings, found.language)}  # only the latest can be settled
        return result

    def _confirm(self, result: UtteranceResult | None, item: Pending) -> UtteranceResult | None:
        if result is None:
            self.no_speech += 1
            return None
        if self.tracker is not None and self._tentative_stats is not None:
            self.tracker.update(self._tentative_stats)  # the tentative was final: its statistics now count
        self._tentative_stats = None
        return reuse(result, item)

    # ---------------------------------------------------------------- hindsight

    async def _settle(self, result: UtteranceResult) -> None:
        """Hold a young voice's utterance; once the voice's window is full, classify its held ones again."""
        kept = self._encodings.pop(id(result), None)
        if self.hindsight is None or kept is None or result.prediction is None:
            return
        voice = result.prediction.speaker
        audio, text, language = kept
        due = self.hindsight.heard(voice, Kept(result.index, self.engine.emotion.hold(audio), text, language,
                                               result.prediction))
        await self._revise(await self._classify_again(voice, due))

    async def _classify_again(self, voice, kept: list[Kept]) -> list[Revision]:
        if not kept:
            return []
        stats = self.tracker.statistics(voice)
        revisions = []
        for item in kept:
            prediction = await self.engine.classify_again(item.audio, item.text, stats, item.language)
            prediction.speaker = voice
            revisions.append(Revision(item.index, prediction, item.prediction))
        return revisions

    async def _revise(self, revisions: list[Revision]) -> None:
        self.summary.revise(revisions)
        for revision in revisions:
            await self.send({**revision.to_dict(), **self.meta})

    # ---------------------------------------------------------------- summary

    def session_summary(self) -> dict:
        seg = self.segmenter.stats
        summary = self.summary.build(
            audio_s=round(self.audio_s, 3), overflows=0, dropped_audio_s=round(self.dropped_audio_s, 3),
            dropped_utterances=self.dropped_utterances, short_dropped=seg.dropped_short, no_speech=self.no_speech,
            forced_splits=seg.forced_splits, peak_lag_s=0.0, reopens=0, end_reason=self.end_reason,
        )
        return summary.to_dict()
