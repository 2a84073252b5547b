"""The stages wired together: threads connected by bounded queues.

    capture thread --audio_q--> [denoise +] VAD thread --segment_q--> recognition thread --result_q--> caller

Capture never waits for a later stage: in live mode (a device, or a file paced in real
time) a full queue loses its oldest item and the loss is counted; in fast mode (a file
read as fast as possible) the producer waits instead, so nothing is lost. The emotion
model's audio encoder starts on a worker thread as soon as an utterance arrives and runs
while Whisper decodes; only the fusion step waits for the transcript. With a denoise stage
(memocmt.live.denoise) the VAD thread enhances the stream first, and the VAD, ASR and the
emotion model each hear the captured or the enhanced signal, as the stage was told.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.live.asr import Transcript
from memocmt.live.capture import Capture, EndOfStream, Source
from memocmt.live.denoise import DenoiseStage
from memocmt.live.errors import LiveError
from memocmt.live.hindsight import Hindsight, Kept, Revision, as_float32, host_copy
from memocmt.live.speculation import Pending, Speculation, reuse
from memocmt.live.summary import SessionSummary, SummaryBuilder, UtteranceResult
from memocmt.live.vad import Segment, Segmenter
from memocmt.results import Prediction

log = logging.getLogger("memocmt")

_END = object()  # sentinel that closes a queue


class EmotionModel(Protocol):
    """What the pipeline needs from an emotion model (the ONNX bundle runtime, or a test double)."""

    labels: list[str]

    def encode_audio(self, audio: np.ndarray) -> Any:
        """Audio-only features; may run while ASR decodes. May return None."""

    def predict(self, audio: np.ndarray, text: str, audio_features: Any = None, language: str | None = None) -> Prediction:
        """The emotion of float32 16 kHz `audio` with transcript `text` in `language` (None: unknown)."""


class SpeechRecognizer(Protocol):
    model_name: str

    def transcribe(self, audio: np.ndarray) -> Transcript: ...


@dataclass
class _AudioFeatures:
    """What `BundleEmotionModel.encode_audio` computes before the words are known."""

    encoding: Any  # the bundle's audio encoding
    voice: np.ndarray  # the speaker embedding (memocmt.voice)


class BundleEmotionModel:
    """Adapts a `memocmt.runtime.Bundle` to `EmotionModel`: the audio encoder runs on its
    own (overlapping ASR), then the text encoder and the fusion head once the words are known.

    A speaker-normalised bundle (memocmt.speaker_norm) classifies each utterance with the audio
    statistics of the last `adapt_window` utterances of its speaker, this one included: with
    `track_speakers` and a bundle that has voice signatures, each voice the session hears keeps
    its own window (memocmt.speakers.SpeakerTracker) and predictions name the voice; otherwise
    the whole session is one window. With `hindsight`, a voice's first utterances are classified
    again once its window is full, or when the session ends (memocmt.live.hindsight): `settle`
    and `settle_all` return those revisions."""

    def __init__(self, bundle: Any, name: str, adapt_window: int = 20, track_speakers: bool = True,
                 speakers: str = "auto", hindsight: bool = True):
        from memocmt.speakers import SpeakerTracker

        self.bundle = bundle
        self.name = name
        self.labels = list(bundle.labels)
        self.adapter: SpeakerTracker | None = None
        self.hindsight: Hindsight | None = None
        self._tentative: np.ndarray | None = None  # statistics of a tentative utterance not yet confirmed
        self._held: tuple | None = None  # (voice, audio, text, language, prediction) of the last committed utterance
        self._held_tentative: tuple | None = None  # ... of the last tentative one
        if getattr(bundle, "speaker_norm", ""):
            from memocmt.voice import tracker_voices

            voices = tracker_voices(getattr(bundle, "voices", None), speakers) if track_speakers else None
            self.adapter = SpeakerTracker(voices, adapt_window, bundle.speaker_prior)
            if hindsight:
                self.hindsight = Hindsight(adapt_window)

    @property
    def tracks_speakers(self) -> bool:
        return self.adapter is not None and self.adapter.voices is not None

    def encode_audio(self, audio: np.ndarray) -> Any:
        """The audio encoding and, when voices are told apart by the audio, the speaker embedding too."""
        encoding = self.bundle.encode_audio(audio) if self.bundle.uses_audio else None
        if self.adapter is not None and self.adapter.needs_audio:
            return _AudioFeatures(encoding, self.adapter.signature(None, audio))
        return encoding

    def predict(self, audio: np.ndarray, text: str, audio_features: Any = None, commit: bool = True,
                language: str | None = None) -> Prediction:
        """The utterance's emotion; with `commit=False` (a tentative segment) the speaker adaptation is not
        changed until `commit_tentative()` confirms it, so a tentative that is recognised again is counted once.
        A `language` the bundle does not read transcripts in is classified from the audio alone
        (memocmt.language_policy)."""
        signature = None
        if isinstance(audio_features, _AudioFeatures):
            audio_features, signature = audio_features.encoding, audio_features.voice
        if self.bundle.uses_audio and audio_features is None:
            audio_features = self.bundle.encode_audio(audio)
        text_features = self.bundle.encode_text(text) if self.bundle.uses_text else None
        stats, voice = None, None
        if self.adapter is not None:
            utterance = self.bundle.audio_stats(audio_features)
            stats, voice = self.adapter.update(utterance, commit=commit, audio=audio, signature=signature)
            self._tentative = None if commit else utterance
        prediction = self.bundle.classify(audio_features, text_features, stats, language)
        prediction.speaker = voice
        if self.hindsight is not None:
            held = (voice, audio_features, text_features, language, prediction)
            if commit:
                self._held = held
            else:
                self._held_tentative = held
        return prediction

    def commit_tentative(self) -> None:
        """The last tentative utterance was the final one: add it to the speaker adaptation."""
        if self.adapter is not None and self._tentative is not None:
            self.adapter.update(self._tentative)
            self._tentative = None
            self._held, self._held_tentative = self._held_tentative, None

    def settle(self, index: int) -> list[Revision]:
        """The last committed utterance is the session's `index`-th: hold it for hindsight while its voice
        is young, and classify again the voice's held utterances once its window is full."""
        if self.hindsight is None or self._held is None:
            return []
        voice, audio, text, language, prediction = self._held
        self._held = None
        from memocmt.bundle import to_host

        kept = Kept(index, host_copy(audio, to_host), None if text is None else host_copy(text, to_host, np.float32),
                    language, prediction)
        return self._revise(voice, self.hindsight.heard(voice, kept))

    def settle_all(self) -> list[Revision]:
        """The session ends: every held utterance classified again with its voice's statistics now."""
        if self.hindsight is None:
            return []
        revisions = [r for voice, items in self.hindsight.remaining().items() for r in self._revise(voice, items)]
        return sorted(revisions, key=lambda r: r.index)

    def _revise(self, voice, items: list[Kept]) -> list[Revision]:
        if not items:
            return []
        stats = self.adapter.statistics(voice)
        revisions = []
        for item in items:
            prediction = self.bundle.classify(as_float32(item.audio), item.text, stats, item.language)
            prediction.speaker = voice
            revisions.append(Revision(item.index, prediction, item.prediction))
        return revisions


def load_emotion_model(path: str | None, device: str | None = None, threads: int | None = None,
                       adapt_window: int = 20, track_speakers: bool = True, speakers: str = "auto",
                       hindsight: bool = True) -> BundleEmotionModel:
    """Load an exported bundle on "cpu", "cuda" or automatically (None); without a path, the
    runtime's default bundle. `threads` caps ONNX Runtime's CPU threads (None: the runtime's
    default). Every failure becomes one LiveError sentence."""
    try:
        from memocmt import runtime
    except ImportError as e:
        if e.name in ("memocmt.runtime", None):
            raise LiveError("The ONNX emotion runtime (memocmt.runtime) is not part of this install; use --no-emotion.") from e
        raise LiveError(f"The emotion runtime needs the {e.name} package; pip install 'memocmt-live[cpu]'.") from e
    try:
        if path is None:
            bundle = runtime.ensure_default_bundle(device, threads)
        else:
            if not Path(path).exists():
                raise LiveError(f"Emotion model bundle not found: {path}")
            bundle = runtime.load_bundle(path, device, threads)
    except LiveError:
        raise
    except Exception as e:  # a bad bundle can fail in many libraries; say which bundle and why
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        what = "the default emotion model" if path is None else f"the emotion model bundle {path}"
        raise LiveError(f"Cannot load {what}: {detail}") from e
    return BundleEmotionModel(bundle, str(bundle.path), adapt_window, track_speakers, speakers, hindsight)


@dataclass
class PipelineConfig:
    """How the stages keep up with the input; the capture stage is built from it (max_lag_s, stall_s,
    reopen_attempts, and catching up only when `live`)."""

    live: bool = True  # drop the oldest audio/utterances when behind (False: wait, lose nothing)
    max_lag_s: float = 3.0  # backlog of captured audio that triggers dropping
    stall_s: float = 2.0  # no audio for this long means the device is lost
    reopen_attempts: int = 3
    audio_queue_s: float = 2.0  # audio between capture and VAD
    segment_queue: int = 8  # utterances waiting for recognition
    drop_empty: bool = True  # with ASR: drop utterances in which no words were recognised


@dataclass
class _Pending(Pending):
    """An utterance waiting for recognition, with what a denoise stage made of its stretch of stream."""

    asr_audio: np.ndarray | None = None  # what ASR hears, when it is not segment.audio (a denoise stage)
    emotion_audio: np.ndarray | None = None  # what the emotion model hears, likewise
    denoise_ms: float | None = None  # denoiser compute time on the utterance's stretch of stream


class Pipeline:
    """Runs the stages on threads; iterate `results()` on the calling thread."""

    def __init__(self, source: Source | Capture, segmenter: Segmenter, transcriber: SpeechRecognizer | None = None,
                 emotion: EmotionModel | None = None, config: PipelineConfig | None = None,
                 denoise: DenoiseStage | None = None):
        self.config = config or PipelineConfig()
        self.denoise = denoise
        if isinstance(source, Capture):  # Pipeline(Capture(source), ...): the capture settings come from config all the same
            source = source.source
        c = self.config
        self.capture = Capture(source, c.max_lag_s, c.stall_s, c.reopen_attempts, backlog_s=self._audio_backlog_s,
                               catch_up=c.live)
        self.segmenter = segmenter
        self.transcriber = transcriber
        self.emotion = emotion
        block_guess = 0.02
        self._audio_q: queue.Queue = queue.Queue(maxsize=max(4, int(self.config.audio_queue_s / block_guess)))
        self._segment_q: queue.Queue = queue.Queue(maxsize=max(1, self.config.segment_queue))
        self._result_q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="memocmt-encode")
        self.summary = SummaryBuilder()
        self.end_reason = "running"
        self.error: LiveError | None = None
        self.dropped_audio_s = 0.0  # blocks lost between capture and VAD
        self.dropped_utterances = 0
        self.no_speech = 0
        self.audio_s = 0.0
        self._index = 0
        self.final_revisions: list[Revision] = []  # hindsight at the end of the session (memocmt.live.hindsight)

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        """Open the source (errors surface here, on the caller's thread) and start the stages."""
        self.capture.start()
        for name, target in (("capture", self._capture_loop), ("vad", self._vad_loop), ("recognize", self._recognize_loop)):
            thread = threading.Thread(target=target, name=f"memocmt-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, reason: str = "stopped") -> None:
        """Stop capturing; the utterance in progress and those queued are still recognised."""
        if not self._stop.is_set():
            self.end_reason = reason
            self._stop.set()

    def abort(self) -> None:
        """Stop at once: queued utterances are not recognised."""
        self.stop("aborted")
        self._abort.set()

    def results(self, idle: Callable[[], None] | None = None) -> Iterator[UtteranceResult]:
        """Yields each result as it is ready; ends when every stage has finished.
        `idle` is called about ten times a second while waiting (to refresh a view)."""
        while True:
            try:
                item = self._result_q.get(timeout=0.1)
            except queue.Empty:
                if self._abort.is_set():
                    break
                if idle is not None:
                    idle()
                continue
            if item is _END:
                break
            self.summary.add(item)
            self.summary.revise(item.revisions)
            yield item
        self.summary.revise(self.final_revisions)
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._encoder.shutdown(wait=False, cancel_futures=True)
        self.capture.close()

    def run(self) -> list[UtteranceResult]:
        """start() and collect every result (tests, benchmarks, files)."""
        self.start()
        return list(self.results())

    def status(self) -> dict:
        """A snapshot for the live view."""
        return {
            "in_speech": self.segmenter.in_speech,
            "audio_s": self.audio_s,
            "queued": self._segment_q.qsize(),
            "overflows": self.capture.source.overflows,
            "lag_s": self._audio_backlog_s() + self.capture.source.backlog_frames() / max(1, self.capture.source.sample_rate),
        }

    def session_summary(self) -> SessionSummary:
        cap = self.capture.update_stats()
        seg = self.segmenter.stats
        return self.summary.build(
            audio_s=round(self.audio_s, 3),
            overflows=cap.overflows,
            dropped_audio_s=round(cap.dropped_s + self.dropped_audio_s, 3),
            dropped_utterances=self.dropped_utterances,
            short_dropped=seg.dropped_short,
            no_speech=self.no_speech,
            forced_splits=seg.forced_splits,
            peak_lag_s=round(cap.peak_lag_s, 3),
            reopens=cap.reopens,
            end_reason=self.end_reason,
        )

    # ---------------------------------------------------------------- stages

    def _audio_backlog_s(self) -> float:
        return self._audio_q.qsize() * 0.02

    def _put(self, q: queue.Queue, item: Any) -> Any:
        """Put without ever blocking in live mode: returns the oldest item dropped, if any."""
        if not self.config.live:
            while True:
                try:
                    q.put(item, timeout=0.1)
                    return None
                except queue.Full:
                    if self._abort.is_set():
                        return None
        dropped = None
        while True:
            try:
                q.put_nowait(item)
                return dropped
            except queue.Full:
                try:
                    dropped = q.get_nowait()
                except queue.Empty:
                    pass

    def _capture_loop(self) -> None:
        try:
            while not self._stop.is_set():
                block = self.capture.next_block(timeout=0.1)
                if block is None:
                    continue
                lost = self._put(self._audio_q, block)
                if lost is not None:
                    self.dropped_audio_s += len(lost.samples) / SAMPLE_RATE
        except EndOfStream:
            self.stop("end of input")
        except LiveError as e:
            self.error = e
            self.stop(str(e))
        except Exception as e:  # keep the session's results: report, then close the queues
            log.exception("capture failed")
            self.error = LiveError(f"Capture failed: {e}")
            self.stop(str(self.error))
        finally:
            self._audio_q.put(_END)

    def _vad_loop(self) -> None:
        expected = 0
        try:
            while True:
                block = self._audio_q.get()
                if block is _END:
                    for segment in self._end_of_stream():
                        self._emit(segment, time.monotonic(), self.segmenter.position)
                    break
                if block.start_sample > expected:  # audio was dropped: do not join across the gap
                    for segment in self._end_of_stream():
                        self._emit(segment, block.arrival, expected)
                    self.segmenter.skip_to(block.start_sample)
                    if self.denoise is not None:
                        self.denoise.reset(block.start_sample)
                expected = block.end_sample
                self.audio_s = block.end_sample / SAMPLE_RATE
                samples = block.samples if self.denoise is None else self.denoise.push(block.samples)
                for segment in self.segmenter.push(samples):
                    # eos is timed from the captured block's end: the denoiser's delay counts as latency
                    self._emit(segment, block.arrival, block.end_sample)
        except Exception as e:
            log.exception("VAD failed")
            self.error = LiveError(f"Voice activity detection failed: {e}")
            self.stop(str(self.error))
        finally:
            self._segment_q.put(_END)

    def _end_of_stream(self) -> list[Segment]:
        """The denoiser's withheld tail through the VAD, then the utterance in progress."""
        segments = self.segmenter.push(self.denoise.flush()) if self.denoise is not None else []
        return segments + self.segmenter.flush()

    def _emit(self, segment: Segment, arrival: float, block_end: int) -> None:
        pending = _Pending.closed(segment, arrival, block_end)
        if self.denoise is not None:  # cut while the stage still holds this stretch of stream
            start, end = segment.end_sample - len(segment.audio), segment.end_sample
            pending.asr_audio = self.denoise.audio_for("asr", start, end)
            pending.emotion_audio = self.denoise.audio_for("emotion", start, end)
            pending.denoise_ms = self.denoise.ms_between(start, end)
        lost = self._put(self._segment_q, pending)
        if lost is not None:
            self.dropped_utterances += 1
            log.warning("recognition is falling behind; dropped the utterance at %.1f s", lost.segment.start_s)

    def _recognize_loop(self) -> None:
        speculation = Speculation()
        try:
            while True:
                item = self._segment_q.get()
                if item is _END:
                    if not self._abort.is_set() and hasattr(self.emotion, "settle_all"):
                        self.final_revisions = self.emotion.settle_all()
                    break
                if self._abort.is_set():
                    continue
                segment = item.segment
                if segment.tentative:
                    # Recognise ahead of the hangover, unless newer audio is already waiting.
                    if self._segment_q.empty():
                        speculation.hold(segment, self._recognize(item))
                    continue
                speculated = speculation.take(segment)
                result = self._recognize(item) if speculated is None else self._confirm(speculated.result, item)
                if result is not None:
                    self._index += 1
                    result.index = self._index
                    if result.prediction is not None and hasattr(self.emotion, "settle"):
                        result.revisions = self.emotion.settle(result.index)
                    self._result_q.put(result)
        except Exception as e:
            log.exception("recognition failed")
            self.error = LiveError(f"Recognition failed: {e}")
            self.stop(str(self.error))
        finally:
            self._result_q.put(_END)

    def _recognize(self, item: _Pending) -> UtteranceResult | None:
        segment = item.segment
        asr_audio = segment.audio if item.asr_audio is None else item.asr_audio
        # the emotion model hears the utterance up to the end of speech, as training cut its clips (Segment.speech_audio)
        emotion_audio = (segment.audio if item.emotion_audio is None else item.emotion_audio)[: len(segment.speech_audio)]
        timings = item.wait_ms(time.monotonic())
        if item.denoise_ms is not None:
            timings["denoise"] = item.denoise_ms
        features = None
        if self.emotion is not None:  # the audio encoder runs while Whisper decodes
            features = self._encoder.submit(_timed, self.emotion.encode_audio, emotion_audio)
        text, language = "", None
        if self.transcriber is not None:
            transcript = self.transcriber.transcribe(asr_audio)
            timings["asr"] = transcript.asr_ms
            if transcript.encoder_ms:
                timings["asr_encoder"] = transcript.encoder_ms
            text = transcript.text
            language = getattr(transcript, "language", None) or None  # detected with --language auto
            if not text and self.config.drop_empty:
                if not segment.tentative:
                    self.no_speech += 1
                log.info("no words in the utterance at %.1f-%.1f s; dropped", segment.start_s, segment.end_s)
                if features is not None:
                    features.cancel()
                return None
        prediction = None
        if self.emotion is not None:
            t0 = time.perf_counter()
            encoded, encode_ms = features.result()
            if segment.tentative and hasattr(self.emotion, "commit_tentative"):
                prediction = self.emotion.predict(emotion_audio, text, audio_features=encoded, commit=False,
                                                  language=language)
            else:
                prediction = self.emotion.predict(emotion_audio, text, audio_features=encoded, language=language)
            timings["audio_encode"] = encode_ms
            timings["emotion"] = (time.perf_counter() - t0) * 1000
        timings["eos_to_result"] = (time.monotonic() - item.eos_wall) * 1000
        return UtteranceResult(
            index=0, start_s=segment.start_s, end_s=segment.end_s, text=text, prediction=prediction,
            timings_ms=timings, forced_split=segment.forced, audio=segment.audio, language=language,
        )


    def _confirm(self, result: UtteranceResult | None, item: _Pending) -> UtteranceResult | None:
        """The final segment of a speculated utterance: reuse the result computed ahead."""
        if result is None:  # the speculation found no words; neither does the final
            self.no_speech += 1
            return None
        if result.prediction is not None and hasattr(self.emotion, "commit_tentative"):
            self.emotion.commit_tentative()  # its speaker statistics now count
        result.audio = item.segment.audio
        return reuse(result, item)


def _timed(fn, *args) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000
