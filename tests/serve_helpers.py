"""Test doubles and plumbing for memocmt.serve: fake models, a server thread on 127.0.0.1, a client."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.live.asr import Transcript
from memocmt.results import Prediction

LABELS = ["neutral", "happy", "sad", "angry"]


class FakeTracker:
    """Counts the utterances of one session (a SpeakerTracker stand-in)."""

    voices = None
    window = 20

    def __init__(self):
        self.updates = 0
        self.last = None

    def update(self, stats, commit=True, audio=None, signature=None):
        self.updates += int(commit)  # a tentative utterance counts once it is confirmed
        if commit:
            self.last = stats
        return stats, 0

    def statistics(self, voice):
        return self.last


class FakeEmotion:
    """EmotionBackend double: the audio 'encoding' is the RMS, the label comes from the transcript."""

    labels = LABELS
    name = "fake-emotion"

    def __init__(self, batchable: bool = True, delay_s: float = 0.0):
        self.audio_batchable = self.head_batchable = batchable
        self.delay_s = delay_s
        self.batches: dict[str, list[int]] = {"audio": [], "text": [], "fusion": []}
        self.languages: list[str | None] = []  # of every utterance the fusion head classified, revisions included
        self.trackers: list[FakeTracker] = []

    def encode_audio_batch(self, audios):
        self.batches["audio"].append(len(audios))
        time.sleep(self.delay_s)
        return [float(np.sqrt(np.mean(np.square(a)))) for a in audios]

    def encode_text_batch(self, texts):
        self.batches["text"].append(len(texts))
        return list(texts)

    def hold(self, encoding):
        return encoding

    def audio_stats(self, encoding):
        return np.full((1, 2, 1, 1), encoding, dtype=np.float32)

    def classify_batch(self, items):
        self.batches["fusion"].append(len(items))
        out = []
        for rms, text, stats, language in items:
            self.languages.append(language)
            assert stats is not None and rms > 0
            label = "angry" if "loud" in text else "sad"
            probs = [0.1] * len(LABELS)
            probs[LABELS.index(label)] = 0.7
            out.append(Prediction.from_probabilities(LABELS, probs))
        return out

    def new_tracker(self, speakers):
        tracker = FakeTracker()
        self.trackers.append(tracker)
        return tracker

    def whisper_states(self, encoding):
        return None


class FakeTranscriber:
    """'loud speech' or 'quiet speech' by the utterance's level, so each session's results show its own audio.

    In a language given (a code) it "decodes with short context" in that language and may batch; in "auto" it
    "detects" `spoken` with the 30 s window, as sure as the next of `probabilities` (the last one repeats), one
    utterance at a time. `multilingual=False` stands for an English-only model."""

    model_name = "fake-asr"
    context = "full"

    def __init__(self, delay_s: float = 0.0, spoken: str = "en", probabilities=(1.0,), language: str | None = None,
                 multilingual: bool = True, batches: bool = True):
        self.delay_s = delay_s
        self.spoken = spoken  # what a detection finds
        self.probabilities = list(probabilities)
        self.language = language  # the server's --language (None: detected)
        self.multilingual = multilingual
        self.batches_together = batches  # False: a recogniser that would transcribe a batch one by one anyway
        self.calls: list[tuple[str | None, list[str]]] = []  # (language, each transcript's context) of every call

    @property
    def batches(self) -> list[int]:
        """Utterances per call."""
        return [len(contexts) for _language, contexts in self.calls]

    def batchable(self, language: str | None = None) -> bool:
        return self.batches_together and language not in (None, "auto")

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        return self.transcribe_batch([audio], language)[0]

    def transcribe_batch(self, audios: list[np.ndarray], language: str | None = None) -> list[Transcript]:
        """Several utterances in the time of one."""
        time.sleep(self.delay_s)
        given = language not in (None, "auto")
        probability = 1.0 if given else self.probabilities[0]
        if not given and len(self.probabilities) > 1:
            self.probabilities.pop(0)
        levels = [float(np.sqrt(np.mean(np.square(audio)))) for audio in audios]
        transcripts = [Transcript(text="loud speech" if level > 0.05 else "quiet speech", asr_ms=self.delay_s * 1000,
                                  no_speech_prob=0.0, avg_logprob=-0.1, language=language if given else self.spoken,
                                  context="short" if given else "full", language_probability=probability)
                       for level in levels]
        self.calls.append((language, [t.context for t in transcripts]))
        return transcripts


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 at a free port, in a daemon thread."""

    def __init__(self, app, max_frame_bytes: int = 1 << 18):
        import uvicorn

        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, ws_max_size=max_frame_bytes, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def compose(parts: list[np.ndarray], gap_s: float = 0.8, scale: float = 1.0) -> np.ndarray:
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([gap] + [x for p in parts for x in (p, gap)])
    return np.clip(audio * scale, -1, 1).astype(np.float32)


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes()


def stream(url: str, audio: np.ndarray, speed: float = 0.0, chunk_ms: int = 100, start: dict | None = None,
           headers: dict | None = None, timeout: float = 60.0) -> list[dict]:
    """Send 16 kHz audio (paced at `speed` x real time; 0: as fast as possible), stop, and return every message."""
    from websockets.sync.client import connect

    messages = []
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        ws.send(json.dumps(start or {"type": "start", "sample_rate": SAMPLE_RATE, "format": "pcm_s16le", "channels": 1,
                                     "overflow": "wait" if speed == 0 else "drop"}))
        messages.append(json.loads(ws.recv(timeout)))
        if messages[0]["type"] != "ready":
            return messages
        chunk = SAMPLE_RATE * chunk_ms // 1000
        t0 = time.monotonic()
        received: list[dict] = []
        reader = threading.Thread(target=_read_all, args=(ws, received, timeout), daemon=True)
        reader.start()
        for i in range(0, len(audio), chunk):
            if speed:
                wait = t0 + i / SAMPLE_RATE / speed - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            ws.send(pcm16(audio[i : i + chunk]))
        ws.send(json.dumps({"type": "stop"}))
        reader.join(timeout)
        messages.extend(received)
    return messages


def _read_all(ws, out: list, timeout: float) -> None:
    from websockets.exceptions import ConnectionClosed

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out.append(json.loads(ws.recv(max(0.1, deadline - time.monotonic()))))
            if out[-1]["type"] == "done":
                return
    except (ConnectionClosed, TimeoutError):
        return


RAVDESS_EMOTIONS = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}


def ravdess_clip(ravdess_dir, actor: int, emotion: str, statement: int = 1, intensity: int = 2):
    """Path of one RAVDESS utterance (statement 1: 'Kids are talking by the door', 2: 'Dogs are sitting by the door')."""
    code = RAVDESS_EMOTIONS[emotion]
    intensity = 1 if emotion == "neutral" else intensity
    return ravdess_dir / f"Actor_{actor:02d}" / f"03-01-{code}-{intensity:02d}-{statement:02d}-01-{actor:02d}.flac"


def ravdess_stream(ravdess_dir, actor: int, emotions: list[str], gap_s: float = 1.0) -> np.ndarray:
    """Utterances of one actor separated by silence, as a 16 kHz stream."""
    from memocmt.audio import load_audio

    clips = [load_audio(ravdess_clip(ravdess_dir, actor, e, statement=1 + i % 2)) for i, e in enumerate(emotions)]
    return compose(clips, gap_s)


def load_real_engine(options=None, **engine_config):
    """The shipped models behind an Engine (`options`: memocmt.serve.cli.ModelOptions, default its defaults);
    skips the test when a part is not installed."""
    import pytest

    from memocmt.live.errors import LiveError
    from memocmt.serve.cli import ModelOptions, load_engine
    from memocmt.serve.engine import EngineConfig

    for module in ("faster_whisper", "onnxruntime", "webrtcvad"):
        pytest.importorskip(module)
    try:
        return load_engine(options or ModelOptions(), EngineConfig(**engine_config))
    except (LiveError, RuntimeError) as e:
        pytest.skip(f"the shipped models cannot be loaded here: {e}")
