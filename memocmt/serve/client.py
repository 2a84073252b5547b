"""`memocmt-live --server ws://HOST:PORT/ws`: stream a microphone, a file or stdin to a server.

A server started with a token takes it in the URL (`?token=...`) or from $MEMOCMT_TOKEN (sent
as a bearer header).

The same view and JSONL lines as a local session: each `utterance` message is turned back
into a `memocmt.live.summary.UtteranceResult`, each `done` into a `SessionSummary`. A sending
thread reads the source and sends PCM16 frames; the main thread receives and shows results.
A first Ctrl-C sends `stop` (the server finishes what it heard), a second one disconnects.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Iterator

import numpy as np

from memocmt.live.errors import LiveError
from memocmt.live.hindsight import Revision
from memocmt.live.summary import SessionSummary, UtteranceResult
from memocmt.results import Prediction
from memocmt.serve import protocol

log = logging.getLogger("memocmt")

PROG = "memocmt-live"
MAX_MESSAGE_BYTES = 1 << 20  # the largest server message accepted (a summary is a few KiB)


def result_from_message(message: dict) -> UtteranceResult:
    """An `utterance` message back into the result the local pipeline would have produced."""
    prediction = None
    if message.get("label") is not None:
        prediction = Prediction(label=message["label"], confidence=float(message["confidence"]),
                                probabilities=dict(message.get("probabilities") or {}), speaker=message.get("speaker"))
    return UtteranceResult(
        index=int(message["index"]), start_s=float(message["start_s"]), end_s=float(message["end_s"]),
        text=message.get("text") or "", prediction=prediction, timings_ms=dict(message.get("timings_ms") or {}),
        forced_split=bool(message.get("forced_split")), speculative=bool(message.get("speculative")),
    )


def revision_from_message(message: dict) -> Revision:
    """A `revision` message back into the hindsight revision the local pipeline would have produced."""
    prediction = Prediction(label=message["label"], confidence=float(message["confidence"]),
                            probabilities=dict(message.get("probabilities") or {}), speaker=message.get("speaker"))
    previous = Prediction(label=message["previous_label"], confidence=float(message["previous_confidence"]),
                          probabilities={}, speaker=message.get("speaker"))
    return Revision(int(message["index"]), prediction, previous)


def summary_from_message(summary: dict) -> SessionSummary:
    fields = dict(summary)
    fields["speakers"] = {int(k): v for k, v in (fields.get("speakers") or {}).items()}
    return SessionSummary(**{k: fields[k] for k in SessionSummary.__dataclass_fields__ if k in fields})


def pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> little-endian int16 bytes."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class RemoteStream:
    """One `memocmt.v1` session over a synchronous websocket connection."""

    def __init__(self, url: str, token: str | None = None, open_timeout: float = 10.0):
        try:
            from websockets.sync.client import connect
        except ImportError as e:
            raise LiveError("Streaming to a server needs the websockets package; pip install 'memocmt-live[serve]'.") from e
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self.ws = connect(url, subprotocols=[protocol.PROTOCOL], additional_headers=headers,
                              max_size=MAX_MESSAGE_BYTES, open_timeout=open_timeout)
        except OSError as e:
            raise LiveError(f"Cannot connect to {url}: {e.strerror or e}.") from e
        except Exception as e:  # websockets raises InvalidStatus, InvalidURI, InvalidHandshake ...
            raise LiveError(f"Cannot connect to {url}: {e}.") from e
        self.url = url

    def start(self, options: protocol.StartOptions) -> dict:
        """Send `start`; returns the `ready` message (LiveError for busy or a refusal)."""
        from websockets.exceptions import ConnectionClosed

        try:
            self.send_json(options.to_message())
        except ConnectionClosed:
            pass  # a busy server closes at once; its message is still there to read
        message = self.receive()
        if message is None:
            raise LiveError(f"The server at {self.url} closed the connection before the session started.")
        if message["type"] == "busy":
            raise LiveError(message.get("message") or "The server is busy; try again later.")
        if message["type"] == "error":
            raise LiveError(f"The server refused the session: {message.get('message')}")
        if message["type"] != "ready":
            raise LiveError(f"Expected a ready message from the server, got {message['type']!r}.")
        return message

    def send_json(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def send_audio(self, samples: np.ndarray) -> None:
        self.ws.send(pcm16(samples))

    def stop(self) -> None:
        self.send_json({"type": "stop"})

    def receive(self, timeout: float | None = None) -> dict | None:
        """The next message; None when the server closed the connection."""
        from websockets.exceptions import ConnectionClosed

        try:
            raw = self.ws.recv(timeout)
        except ConnectionClosed:
            return None
        if isinstance(raw, bytes):
            raise LiveError("The server sent a binary message; is this a memocmt.v1 server?")
        return json.loads(raw)

    def messages(self) -> Iterator[dict]:
        while True:
            message = self.receive()
            if message is None:
                return
            yield message

    def close(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.close()
        except ConnectionClosed:
            pass


def run_remote(args, source: Any) -> int:
    """The body of `memocmt-live --server URL`, streaming `source` (a memocmt.live.capture source,
    not yet open); returns the exit status."""
    from memocmt.live.capture import EndOfStream
    from memocmt.live.display import JsonlWriter, make_view

    source.open()
    realtime = getattr(source, "realtime", True)
    stream = RemoteStream(args.server, token=os.environ.get("MEMOCMT_TOKEN"))
    options = protocol.StartOptions(sample_rate=int(source.sample_rate), speakers=args.speakers,
                                    asr_context=args.asr_context, overflow="drop" if realtime else "wait",
                                    hindsight=not args.no_hindsight,
                                    # --language auto (the default) leaves the language to the server's --language
                                    language=None if args.language in (None, "auto") else args.language)
    try:
        ready = stream.start(options)
    except LiveError:
        stream.close()
        source.close()
        raise
    meta = {k: ready.get(k) for k in ("asr_model", "model", "asr_context", "asr_language", "speaker_tracking")}
    # the server has no denoise stage: its audio is recognised as captured
    meta = {"device": f"{source.description} -> {args.server.split('?')[0]}", **meta,
            "denoise": ready.get("denoise", "off"), "denoise_for": ready.get("denoise_for", [])}
    writer = JsonlWriter(args.jsonl, meta) if args.jsonl else None
    view = make_view(sys.stderr if args.jsonl == "-" else sys.stdout, rich=False if args.plain else None)
    stopping = threading.Event()
    failure: list[BaseException] = []

    def send_loop() -> None:
        try:
            while not stopping.is_set():
                try:
                    item = source.read(0.1)
                except EndOfStream:
                    break
                if item is not None:
                    stream.send_audio(item[0])
            stream.stop()
        except Exception as e:  # a lost device or connection: reported once the receiver ends
            failure.append(e)
        finally:
            source.close()

    interrupts = 0

    def on_signal(signum, _frame) -> None:
        nonlocal interrupts
        interrupts += 1
        stopping.set()
        if interrupts > 1 or signum == signal.SIGTERM:
            threading.Thread(target=stream.close, daemon=True).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    sender = threading.Thread(target=send_loop, name="memocmt-send", daemon=True)
    summary = None
    errors: list[str] = []
    with view:
        view.started(f"{source.description} -> {args.server.split('?')[0]} (session {ready['session']})")
        sender.start()
        for message in stream.messages():
            kind = message.get("type")
            if kind == "utterance":
                result = result_from_message(message)
                if writer:
                    writer.write(result)
                view.show(result)
            elif kind == "revision":
                revision = revision_from_message(message)
                if writer:
                    writer.write_revision(revision)
                view.revise([revision])
            elif kind == "done":
                summary = summary_from_message(message["summary"])
                break
            elif kind == "error":
                errors.append(str(message.get("message")))
                log.warning("server: %s", message.get("message"))
    stopping.set()
    stream.close()
    sender.join(timeout=2.0)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if writer:
        writer.close()
    if summary is not None:
        view.summary(summary)
    if failure:
        print(f"{PROG}: {failure[0]}", file=sys.stderr)
        return 1
    if summary is None:
        reason = errors[-1] if errors else "the connection closed before the session summary arrived"
        print(f"{PROG}: the server ended the session: {reason}", file=sys.stderr)
        return 1
    return 0
