"""Protocol `memocmt.v1`: the JSON messages of a stream and the close codes.

Client -> server: one `start` message, then binary frames of raw PCM (any size, split
anywhere, even inside a sample), then `stop`. Server -> client: `ready` once, one `utterance`
per utterance, a `revision` when an earlier utterance is classified again in hindsight
(memocmt.live.hindsight; `"hindsight": false` in `start` turns them off), `error` for a message
it cannot use (also a `language` the server's Whisper cannot transcribe, which the session checks),
`done` with the session summary after `stop`, or `busy` when every slot is taken. Pure parsing and
building; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PROTOCOL = "memocmt.v1"
SAMPLE_FORMATS = {"pcm_s16le": 2, "pcm_f32le": 4}  # format -> bytes per sample
MIN_RATE, MAX_RATE = 8000, 192000  # Hz accepted in `start`
MAX_CHANNELS = 8  # interleaved channels accepted in `start` (mixed down to mono)
SPEAKER_MODES = ("auto", "ge2e", "one")  # as memocmt-live --speakers
ASR_CONTEXTS = ("short", "full")  # as memocmt-live --asr-context
OVERFLOW_MODES = ("drop", "wait")  # when recognition falls behind: drop the oldest utterance, or stop reading
MAX_TEXT_BYTES = 4096  # a control message longer than this is refused

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # missing or wrong token
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # busy: every session slot is taken


class ProtocolError(ValueError):
    """A client message the server cannot use; its text goes back in an `error` message."""


@dataclass
class StartOptions:
    """What a `start` message asks for."""

    sample_rate: int = 16000  # Hz of the PCM frames that follow (resampled to 16 kHz on the server)
    format: str = "pcm_s16le"  # a key of SAMPLE_FORMATS
    channels: int = 1  # interleaved channels, mixed down to mono
    speakers: str = "auto"  # "auto": tell voices apart (a model with voice signatures); "one": one voice
    asr_context: str | None = None  # "short" / "full"; None: the server's default
    overflow: str = "drop"  # "drop": live audio, lose the oldest utterance when behind; "wait": lose nothing
    hindsight: bool = True  # classify a voice's first utterances again once it is well known (`revision` messages)
    language: str | None = None  # spoken language: a code ("en"), or "auto" (detected); None: the server's --language

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (all channels)."""
        return SAMPLE_FORMATS[self.format] * self.channels

    @classmethod
    def parse(cls, message: dict) -> "StartOptions":
        """Validate a decoded `start` message; raises ProtocolError naming the first bad field."""
        known = {"type", "sample_rate", "format", "channels", "speakers", "asr_context", "overflow", "hindsight",
                 "language"}
        unknown = sorted(set(message) - known)
        if unknown:
            raise ProtocolError(f"Unknown field{'s' if len(unknown) > 1 else ''} in start: {', '.join(unknown)}.")
        rate = message.get("sample_rate", 16000)
        if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
            raise ProtocolError(f"sample_rate must be an integer from {MIN_RATE} to {MAX_RATE} Hz, not {rate!r}.")
        fmt = message.get("format", "pcm_s16le")
        if fmt not in SAMPLE_FORMATS:
            raise ProtocolError(f"format must be one of {', '.join(SAMPLE_FORMATS)}, not {fmt!r}.")
        channels = message.get("channels", 1)
        if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_CHANNELS:
            raise ProtocolError(f"channels must be an integer from 1 to {MAX_CHANNELS}, not {channels!r}.")
        speakers = message.get("speakers", "auto")
        if speakers not in SPEAKER_MODES:
            raise ProtocolError(f"speakers must be one of {', '.join(SPEAKER_MODES)}, not {speakers!r}.")
        context = message.get("asr_context")
        if context is not None and context not in ASR_CONTEXTS:
            raise ProtocolError(f"asr_context must be one of {', '.join(ASR_CONTEXTS)}, not {context!r}.")
        overflow = message.get("overflow", "drop")
        if overflow not in OVERFLOW_MODES:
            raise ProtocolError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}, not {overflow!r}.")
        hindsight = message.get("hindsight", True)
        if not isinstance(hindsight, bool):
            raise ProtocolError(f"hindsight must be true or false, not {hindsight!r}.")
        language = message.get("language")  # whether the server's Whisper knows it: memocmt.serve.session
        if language is not None and (not isinstance(language, str) or not language.strip()):
            raise ProtocolError(f'language must be a language code such as "en", or "auto", not {language!r}.')
        return cls(rate, fmt, channels, speakers, context, overflow, hindsight, language)

    def to_message(self) -> dict:
        message = {"type": "start", "sample_rate": self.sample_rate, "format": self.format, "channels": self.channels,
                   "speakers": self.speakers, "overflow": self.overflow, "hindsight": self.hindsight}
        if self.asr_context is not None:
            message["asr_context"] = self.asr_context
        if self.language is not None:
            message["language"] = self.language
        return message


def parse_message(text: str) -> dict:
    """Decode a text frame into a message with a known `type`; raises ProtocolError otherwise."""
    if len(text) > MAX_TEXT_BYTES:
        raise ProtocolError(f"Control messages are at most {MAX_TEXT_BYTES} bytes; audio goes in binary frames.")
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("Text frames must be JSON messages; send audio as binary frames.") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('A message must be a JSON object with a "type".')
    if message["type"] not in ("start", "stop"):
        raise ProtocolError(f"Unknown message type {message['type']!r}; a client sends start and stop.")
    return message


def ready(session: str, labels: list[str], meta: dict) -> dict:
    """`meta` holds the fields every utterance line carries (models, ASR context, speaker tracking)."""
    return {"type": "ready", "protocol": PROTOCOL, "session": session, "labels": list(labels), **meta}


def utterance(record: dict) -> dict:
    """An utterance: the fields of a `memocmt-live --jsonl` line."""
    return {"type": "utterance", **record}


def error(message: str) -> dict:
    return {"type": "error", "message": message}


def done(summary: dict) -> dict:
    return {"type": "done", "summary": summary}


def busy(max_sessions: int) -> dict:
    return {"type": "busy", "message": f"The server is serving its maximum of {max_sessions} sessions; try again later."}
