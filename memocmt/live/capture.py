"""Audio sources (microphone, file, stdin) and the capture stage that turns them into
16 kHz mono blocks while watching lag.

The microphone callback only copies each block into a bounded queue. `Capture` pulls
from a source, resamples with a streaming soxr filter, compares the audio received with
the wall clock, and when the backlog passes `max_lag_s` drops the oldest audio (and says
so) instead of drifting further behind. A device that stops delivering is reopened a few
times before the session ends with a reason.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

import numpy as np

from memocmt.audio import SAMPLE_RATE, AudioError, load_audio, to_float32, to_mono
from memocmt.live.errors import LiveError

log = logging.getLogger("memocmt")

BLOCK_MS = 20  # capture block; VAD frames are 10-32 ms so a block rarely waits for more audio
RAW_QUEUE_S = 10.0  # audio the microphone queue holds before the callback has to drop blocks
MIN_RATE, MAX_RATE = 1000, 384000  # Hz accepted for --input-rate / --capture-rate


class EndOfStream(Exception):
    """The source has no more audio (end of file or stdin closed)."""


class DeviceLost(Exception):
    """The input device stopped delivering audio."""


@dataclass
class AudioBlock:
    """A block of captured audio, resampled to 16 kHz mono."""

    samples: np.ndarray  # float32 in [-1, 1]
    start_sample: int  # stream position at 16 kHz; jumps forward where audio was dropped
    arrival: float  # time.monotonic() when its last sample became available

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)


class Source(Protocol):
    """Where audio comes from; `read` returns float32 mono blocks at `sample_rate`."""

    sample_rate: int
    description: str
    overflows: int  # blocks the device or the queue lost before we saw them
    lost_frames: int  # frames lost that way

    def open(self) -> None: ...

    def read(self, timeout: float) -> tuple[np.ndarray, float] | None:
        """The next block and its arrival time, None after `timeout` s without audio;
        raises EndOfStream at the end and DeviceLost when the device is gone."""

    def backlog_frames(self) -> int:
        """Frames available now but not yet read (what a slow consumer piles up)."""

    def drop_oldest(self, frames: int) -> int:
        """Discard up to `frames` of the oldest backlog; returns how many were dropped."""

    def reopen(self) -> None: ...

    def close(self) -> None: ...


def check_rate(rate: int, what: str) -> int:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise LiveError(f"{what} must be between {MIN_RATE} and {MAX_RATE} Hz, not {rate}.")
    return rate


# --------------------------------------------------------------------------- microphone


def import_sounddevice():
    """sounddevice, or one sentence saying why it cannot be used."""
    try:
        import sounddevice
    except ImportError as e:
        raise LiveError("sounddevice is not installed; pip install sounddevice.") from e
    except OSError as e:  # raised when the PortAudio shared library is missing
        raise LiveError("PortAudio is not installed; install libportaudio2 (Debian/Ubuntu) or portaudio.") from e
    return sounddevice


def input_devices() -> list[dict]:
    """The input devices PortAudio sees, each with its index."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as e:
        raise LiveError(f"Cannot list audio devices: {e}") from e
    return [dict(d, index=i) for i, d in enumerate(devices) if d["max_input_channels"] > 0]


def resolve_device(device: str | int | None) -> dict:
    """Find an input device by index, by name substring (case-insensitive), or the default."""
    sd = import_sounddevice()
    devices = input_devices()
    if not devices:
        raise LiveError("No audio input device found; connect a microphone, or use --input FILE.")
    if device is None or device == "":
        try:
            info = sd.query_devices(kind="input")
        except (sd.PortAudioError, ValueError) as e:
            raise LiveError("There is no default input device; choose one with --device (see --list-devices).") from e
        matches = [d for d in devices if d["name"] == info["name"]]
        return matches[0] if matches else dict(info, index=sd.default.device[0])
    text = str(device).strip()
    if text.isdigit():
        matches = [d for d in devices if d["index"] == int(text)]
        if not matches:
            raise LiveError(f"No input device has index {text}; run --list-devices to see the choices.")
        return matches[0]
    matches = [d for d in devices if text.lower() in d["name"].lower()]
    if not matches:
        raise LiveError(f"No input device matches {text!r}; run --list-devices to see the choices.")
    return matches[0]


def choose_rate(device_index: int, default_rate: float, wanted: int | None = None) -> int:
    """16 kHz if the device supports it (or `wanted` if given), else the device's default rate."""
    sd = import_sounddevice()
    candidates = [wanted] if wanted else [SAMPLE_RATE, int(default_rate)]
    for rate in candidates:
        try:
            sd.check_input_settings(device=device_index, samplerate=rate, channels=1, dtype="float32")
            return rate
        except (sd.PortAudioError, ValueError):
            continue
    tried = " or ".join(f"{r} Hz" for r in candidates)
    raise LiveError(f"The input device does not support {tried}; choose another rate with --capture-rate.")


class MicrophoneSource:
    """A sounddevice input stream whose callback copies blocks into a bounded queue."""

    def __init__(self, device: str | int | None = None, rate: int | None = None, block_ms: int = BLOCK_MS):
        self._wanted_device = device
        self._wanted_rate = rate
        self._block_ms = block_ms
        self.sample_rate = 0
        self.description = ""
        self.overflows = 0
        self.lost_frames = 0
        self._stream = None
        self._queue: queue.Queue = queue.Queue()

    def open(self) -> None:
        sd = import_sounddevice()
        info = resolve_device(self._wanted_device)
        self.sample_rate = choose_rate(info["index"], info["default_samplerate"], self._wanted_rate)
        self._blocksize = max(1, self.sample_rate * self._block_ms // 1000)
        self._queue = queue.Queue(maxsize=max(4, int(RAW_QUEUE_S * 1000 / self._block_ms)))
        self.description = f"{info['name']} (#{info['index']}, {self.sample_rate} Hz)"
        try:
            self._stream = sd.InputStream(
                samplerate=self.sample_rate, blocksize=self._blocksize, device=info["index"],
                channels=1, dtype="float32", callback=self._callback,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise LiveError(f"Cannot open input device {self.description}: {e}") from e
        log.info("capturing from %s", self.description)

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: hand the block off and return, nothing else.
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait((indata[:, 0].copy(), time.monotonic()))
        except queue.Full:
            self.overflows += 1
            self.lost_frames += frames

    def read(self, timeout: float) -> tuple[np.ndarray, float] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if self._stream is not None and not self._stream.active:
                raise DeviceLost(f"{self.description} stopped") from None
            return None

    def backlog_frames(self) -> int:
        return self._queue.qsize() * self._blocksize

    def drop_oldest(self, frames: int) -> int:
        dropped = 0
        while dropped < frames:
            try:
                block, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            dropped += len(block)
        return dropped

    def reopen(self) -> None:
        self.close()
        sd = import_sounddevice()
        # PortAudio reads the device list once; re-initialise it so a re-plugged device is seen.
        sd._terminate()
        sd._initialize()
        self.open()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as e:  # a vanished device may refuse to close; nothing more to do
                log.debug("closing the input stream failed: %s", e)


# --------------------------------------------------------------------------- file / stdin


class _PullSource:
    """Common reading and pacing for sources we pull from (file, stdin).

    With `realtime`, blocks are released no faster than the wall clock, like a device:
    a slow consumer then builds a backlog that `Capture` can drop, exactly as live.
    Without it, blocks are read as fast as they are asked for.
    """

    def __init__(self, rate: int, realtime: bool, block_ms: int, clock: Callable[[], float]):
        self.sample_rate = rate
        self.realtime = realtime
        self.overflows = 0
        self.lost_frames = 0
        self._block = max(1, rate * block_ms // 1000)
        self._clock = clock
        self._t0: float | None = None
        self._position = 0  # frames read or skipped

    def _raw(self, frames: int) -> np.ndarray:
        raise NotImplementedError

    def read(self, timeout: float) -> tuple[np.ndarray, float] | None:
        if self._t0 is None:
            self._t0 = self._clock()
        if self.realtime:
            due = self._t0 + (self._position + self._block) / self.sample_rate
            wait = due - self._clock()
            if wait > timeout:
                time.sleep(timeout)
                return None
            if wait > 0:
                time.sleep(wait)
        block = self._raw(self._block)
        if block.size == 0:
            raise EndOfStream()
        self._position += len(block)
        return block, self._clock()

    def backlog_frames(self) -> int:
        if not self.realtime or self._t0 is None:
            return 0
        return max(0, int((self._clock() - self._t0) * self.sample_rate) - self._position)

    def drop_oldest(self, frames: int) -> int:
        dropped = 0
        while dropped < frames:
            block = self._raw(min(self._block * 50, frames - dropped))
            if block.size == 0:
                break
            dropped += len(block)
        self._position += dropped
        return dropped

    def reopen(self) -> None:
        raise DeviceLost("a file or stream cannot be reopened")


class FileSource(_PullSource):
    """Streams an audio file in blocks (bounded memory for WAV/FLAC/OGG; other formats
    that only PyAV decodes are read whole)."""

    def __init__(self, path: str | Path, realtime: bool = False, block_ms: int = BLOCK_MS,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        if not self.path.is_file():
            raise LiveError(f"Input file not found: {self.path}")
        self._file = None
        self._decoded: np.ndarray | None = None
        rate = self._open_file()
        super().__init__(rate, realtime, block_ms, clock)
        self.description = f"{self.path.name} ({rate} Hz{', paced in real time' if realtime else ''})"

    def _open_file(self) -> int:
        import soundfile as sf

        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError) as sf_error:
            log.debug("soundfile cannot stream %s (%s); decoding it whole", self.path, sf_error)
        else:
            if self._file.frames == 0:
                self._file.close()
                raise LiveError(f"{self.path} holds no audio (0 samples); record or choose a file with speech in it.")
            return int(self._file.samplerate)
        try:
            self._decoded = load_audio(self.path, SAMPLE_RATE)
        except AudioError as e:
            raise LiveError(str(e)) from e
        if not len(self._decoded):
            raise LiveError(f"{self.path} holds no audio (0 samples); record or choose a file with speech in it.")
        return SAMPLE_RATE

    def open(self) -> None:
        """The file was opened in the constructor so errors show before anything starts."""

    def _raw(self, frames: int) -> np.ndarray:
        if self._decoded is not None:
            block = self._decoded[:frames]
            self._decoded = self._decoded[frames:]
            return block
        data = self._file.read(frames, dtype="float32", always_2d=True)
        block = to_mono(data) if data.shape[1] > 1 else data[:, 0]
        if not np.all(np.isfinite(block)):
            raise LiveError(f"{self.path} contains NaN or infinite samples; the file is corrupt.")
        return np.clip(block, -1.0, 1.0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StdinSource(_PullSource):
    """Raw little-endian int16 mono PCM at `rate` from a binary stream (stdin by default)."""

    def __init__(self, rate: int, realtime: bool = False, block_ms: int = BLOCK_MS,
                 stream: BinaryIO | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__(check_rate(rate, "--input-rate"), realtime, block_ms, clock)
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._odd = b""
        self.description = f"stdin (int16 mono, {rate} Hz)"

    def open(self) -> None:
        """stdin is already open."""

    def _raw(self, frames: int) -> np.ndarray:
        data = self._odd + self._stream.read(frames * 2 - len(self._odd))
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        return to_float32(np.frombuffer(data[:cut], dtype="<i2"))

    def close(self) -> None:
        """stdin belongs to the process."""


# --------------------------------------------------------------------------- capture stage


class LagMonitor:
    """Compares audio received with the wall clock and the backlog with a bound.

    `backlog_s` is audio that has arrived but not yet been consumed; it grows when a
    consumer is slow, which PortAudio does not report as an overflow. `stalled` is true
    when no audio has arrived for `stall_s`, which is how a lost device shows itself.
    """

    def __init__(self, max_lag_s: float = 3.0, stall_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if max_lag_s <= 0:
            raise LiveError(f"The maximum lag must be positive, not {max_lag_s} s.")
        self.max_lag_s = max_lag_s
        self.stall_s = stall_s
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self._t0: float | None = None
        self._last: float | None = None
        self.received_s = 0.0
        self.peak_lag_s = 0.0
        self.behind = False  # inside a lag episode (warned once per episode)

    def arm(self) -> None:
        """Start the stall timer before the first block arrives."""
        self._last = self.clock()

    def received(self, seconds: float) -> None:
        now = self.clock()
        if self._t0 is None:
            self._t0 = now - seconds
        self._last = now
        self.received_s += seconds

    def drift_s(self) -> float:
        """Wall time since the first block minus audio received (positive: the device is slow)."""
        return 0.0 if self._t0 is None else (self.clock() - self._t0) - self.received_s

    def stalled(self) -> bool:
        return self._last is not None and self.clock() - self._last > self.stall_s

    def excess_s(self, backlog_s: float) -> float:
        """Seconds of the oldest audio to drop so the backlog is back to half the bound (0: none)."""
        self.peak_lag_s = max(self.peak_lag_s, backlog_s)
        if backlog_s <= self.max_lag_s:
            if backlog_s < self.max_lag_s / 2:
                self.behind = False
            return 0.0
        return backlog_s - self.max_lag_s / 2


@dataclass
class CaptureStats:
    overflows: int = 0  # device overflows plus blocks the callback queue had no room for
    dropped_s: float = 0.0  # audio dropped to catch up with real time
    lag_events: int = 0  # times the backlog passed the bound
    peak_lag_s: float = 0.0
    reopens: int = 0
    drift_s: float = 0.0  # wall clock minus audio received at the end


class Capture:
    """Pulls blocks from a source, resamples them to 16 kHz and keeps up with real time."""

    def __init__(self, source: Source, max_lag_s: float = 3.0, stall_s: float = 2.0, reopen_attempts: int = 3,
                 backlog_s: Callable[[], float] = lambda: 0.0, clock: Callable[[], float] = time.monotonic,
                 catch_up: bool = True):
        self.source = source
        self.monitor = LagMonitor(max_lag_s, stall_s, clock)
        self.reopen_attempts = reopen_attempts
        self.catch_up = catch_up  # drop the oldest audio when behind (off when a file is read at full speed)
        self.downstream_backlog_s = backlog_s
        self.stats = CaptureStats()
        self._resampler = None
        self._rate = 0
        self._position = 0  # 16 kHz samples emitted or skipped
        self._caught_up_s = 0.0  # audio dropped by _catch_up

    def start(self) -> None:
        self.source.open()
        self._new_resampler()
        self.monitor.arm()

    def _new_resampler(self) -> None:
        self._rate = self.source.sample_rate
        if self._rate == SAMPLE_RATE:
            self._resampler = None
            return
        import soxr

        self._resampler = soxr.ResampleStream(self._rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def next_block(self, timeout: float = 0.1) -> AudioBlock | None:
        """The next 16 kHz block, None if none arrived within `timeout`.

        Raises EndOfStream when the source ends and LiveError when the device is lost
        and could not be reopened.
        """
        try:
            self._catch_up()  # before reading, so the block read is the first one after any gap
            item = self.source.read(timeout)
            if item is None and self.monitor.stalled():
                raise DeviceLost(f"no audio for {self.monitor.stall_s:.0f} s")
        except DeviceLost as e:
            self._recover(str(e))
            return None
        except EndOfStream:
            tail = self._flush_resampler()
            if tail is not None:
                return tail
            raise
        if item is None:
            return None
        raw, arrival = item
        self.monitor.received(len(raw) / self._rate)
        samples = self._resample(raw, last=False)
        block = AudioBlock(samples, self._position, arrival)
        self._position += len(samples)
        return block

    def _catch_up(self) -> None:
        if not self.catch_up:
            return
        backlog = self.source.backlog_frames() / self._rate + self.downstream_backlog_s()
        excess = self.monitor.excess_s(backlog)
        if excess <= 0:
            return
        dropped = self.source.drop_oldest(int(excess * self._rate)) / self._rate
        if not self.monitor.behind:
            self.monitor.behind = True
            self.stats.lag_events += 1
            log.warning("audio is %.1f s behind real time; dropping the oldest %.1f s to catch up", backlog, dropped)
        if dropped > 0:
            self._caught_up_s += dropped
            self._position += int(round(dropped * SAMPLE_RATE))
            if self._resampler is not None:
                self._new_resampler()  # do not filter across the gap

    def _resample(self, raw: np.ndarray, last: bool) -> np.ndarray:
        if self._resampler is None:
            return raw.astype(np.float32, copy=False)
        return self._resampler.resample_chunk(raw.astype(np.float32, copy=False), last=last)

    def _flush_resampler(self) -> AudioBlock | None:
        if self._resampler is None:
            return None
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._resampler = None
        if tail.size == 0:
            return None
        block = AudioBlock(tail, self._position, time.monotonic())
        self._position += len(tail)
        return block

    def _recover(self, reason: str) -> None:
        for attempt in range(1, self.reopen_attempts + 1):
            log.warning("input lost (%s); reopening, attempt %d of %d", reason, attempt, self.reopen_attempts)
            try:
                self.source.reopen()
            except (LiveError, DeviceLost) as e:
                reason = str(e)
                time.sleep(0.5)
                continue
            self.stats.reopens += 1
            self.monitor.reset()
            self.monitor.arm()
            self._new_resampler()
            return
        raise LiveError(f"The input device was lost and could not be reopened ({reason}).")

    def update_stats(self) -> CaptureStats:
        self.stats.overflows = self.source.overflows
        rate = self.source.sample_rate or SAMPLE_RATE
        self.stats.dropped_s = self._caught_up_s + self.source.lost_frames / rate
        self.stats.peak_lag_s = self.monitor.peak_lag_s
        self.stats.drift_s = self.monitor.drift_s()
        return self.stats

    def close(self) -> None:
        self.source.close()
