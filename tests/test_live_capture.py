"""Capture: lag watching and dropping with a fake clock, device loss, file and stdin sources."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from memocmt.audio import SAMPLE_RATE
from memocmt.live.capture import Capture, DeviceLost, EndOfStream, FileSource, LagMonitor, StdinSource
from memocmt.live.errors import LiveError


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeDevice:
    """A device-like source: a backlog of blocks that a test fills, like the callback would."""

    description = "fake device"

    def __init__(self, rate: int = 48000, block: int = 960, fail_reopen: bool = False):
        self.sample_rate = rate
        self.block = block
        self.queue: list[np.ndarray] = []
        self.overflows = 0
        self.lost_frames = 0
        self.reopened = 0
        self.fail_reopen = fail_reopen
        self.lost = False
        self.counter = 0

    def deliver(self, n: int) -> None:
        for _ in range(n):
            self.counter += 1
            self.queue.append(np.full(self.block, self.counter * 1e-4, dtype=np.float32))

    def open(self) -> None:
        pass

    def read(self, timeout: float):
        if self.lost:
            raise DeviceLost("gone")
        if not self.queue:
            return None
        return self.queue.pop(0), 0.0

    def backlog_frames(self) -> int:
        return len(self.queue) * self.block

    def drop_oldest(self, frames: int) -> int:
        dropped = 0
        while self.queue and dropped < frames:
            dropped += len(self.queue.pop(0))
        return dropped

    def reopen(self) -> None:
        self.reopened += 1
        if self.fail_reopen:
            raise DeviceLost("still gone")
        self.lost = False

    def close(self) -> None:
        pass


def test_lag_monitor_bound_and_stall_with_fake_clock():
    clock = FakeClock()
    mon = LagMonitor(max_lag_s=2.0, stall_s=1.0, clock=clock)
    mon.arm()
    assert not mon.stalled()
    clock.now += 0.5
    mon.received(0.5)
    assert mon.drift_s() == pytest.approx(0.0)
    assert mon.excess_s(1.0) == 0.0
    assert mon.excess_s(3.0) == pytest.approx(2.0)  # back to half the bound
    assert mon.peak_lag_s == 3.0
    clock.now += 1.5  # no audio for 1.5 s
    assert mon.stalled()
    assert mon.drift_s() == pytest.approx(1.5)


def test_slow_consumer_drops_the_oldest_audio_and_keeps_stream_time():
    clock = FakeClock()
    device = FakeDevice()
    cap = Capture(device, max_lag_s=1.0, clock=clock)
    cap.start()
    device.deliver(1)
    first = cap.next_block()
    assert first.start_sample == 0
    # The consumer stalls while 3 s of audio piles up (the callback keeps queueing).
    clock.now += 3.0
    device.deliver(150)  # 150 x 20 ms
    block = cap.next_block()
    stats = cap.update_stats()
    assert stats.lag_events == 1
    assert stats.dropped_s == pytest.approx(2.5, abs=0.05)  # 2.98 s backlog -> 0.5 s
    assert device.backlog_frames() / device.sample_rate <= 0.5
    # Stream time jumps over the dropped audio instead of drifting behind the wall clock.
    assert block.start_sample == pytest.approx(first.end_sample + 2.5 * SAMPLE_RATE, abs=0.05 * SAMPLE_RATE)
    # The kept blocks are the newest: the oldest ones were dropped.
    assert device.queue[0][0] > 120 * 1e-4


def test_no_dropping_when_reading_at_full_speed():
    device = FakeDevice()
    cap = Capture(device, max_lag_s=1.0, clock=FakeClock())
    cap.catch_up = False
    cap.start()
    device.deliver(200)
    blocks = [cap.next_block() for _ in range(200)]
    assert cap.update_stats().dropped_s == 0
    assert sum(len(b.samples) for b in blocks) == pytest.approx(200 * 320, abs=400)


def test_lost_device_is_reopened():
    device = FakeDevice()
    cap = Capture(device, clock=FakeClock())
    cap.start()
    device.lost = True
    assert cap.next_block() is None
    assert device.reopened == 1 and cap.stats.reopens == 1
    device.deliver(1)
    assert cap.next_block() is not None


def test_stalled_device_ends_the_session_with_a_reason(monkeypatch):
    monkeypatch.setattr("memocmt.live.capture.time.sleep", lambda s: None)
    clock = FakeClock()
    device = FakeDevice(fail_reopen=True)
    cap = Capture(device, stall_s=2.0, reopen_attempts=3, clock=clock)
    cap.start()
    clock.now += 2.5  # callbacks stopped
    with pytest.raises(LiveError, match="lost and could not be reopened"):
        cap.next_block()
    assert device.reopened == 3


def test_file_source_resamples_stereo_44k_to_16k_mono(tmp_path):
    t = np.arange(44100 * 2) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([tone, tone], axis=1), 44100)
    cap = Capture(FileSource(path, realtime=False))
    cap.start()
    blocks = []
    with pytest.raises(EndOfStream):
        while True:
            block = cap.next_block()
            if block is not None:
                blocks.append(block)
    audio = np.concatenate([b.samples for b in blocks])
    assert len(audio) == pytest.approx(2 * SAMPLE_RATE, abs=32)
    assert 0.3 < audio.std() < 0.4  # a 0.5-amplitude sine survives resampling
    assert [b.start_sample for b in blocks[1:]] == [b.end_sample for b in blocks[:-1]]


def test_paced_file_source_drops_when_the_consumer_falls_behind(tmp_path):
    path = tmp_path / "ten.wav"
    sf.write(path, np.zeros(SAMPLE_RATE * 10, dtype=np.float32), SAMPLE_RATE)
    clock = FakeClock()
    source = FileSource(path, realtime=True, clock=clock)
    cap = Capture(source, max_lag_s=2.0, clock=clock)
    cap.start()
    cap.next_block(timeout=0.1)  # starts the pacing clock... and waits: nothing due yet
    clock.now += 5.0  # consumer stalled for 5 s
    block = cap.next_block()
    assert cap.update_stats().dropped_s == pytest.approx(4.0, abs=0.05)
    assert block.start_sample >= 4 * SAMPLE_RATE


def test_stdin_source_reads_int16_and_handles_odd_bytes():
    pcm = (np.sin(np.arange(8000) / 10) * 16000).astype("<i2").tobytes()
    stream = io.BufferedReader(io.BytesIO(pcm + b"\x01"))  # a trailing half sample is ignored
    source = StdinSource(8000, stream=stream)
    cap = Capture(source)
    cap.start()
    total = 0
    with pytest.raises(EndOfStream):
        while True:
            block = cap.next_block()
            total += len(block.samples) if block is not None else 0
    assert total == pytest.approx(SAMPLE_RATE, abs=32)


def test_bad_rates_and_missing_files_are_one_sentence(tmp_path):
    with pytest.raises(LiveError, match="--input-rate must be between"):
        StdinSource(0)
    with pytest.raises(LiveError, match="Input file not found"):
        FileSource(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 100)
    with pytest.raises(LiveError, match="bad.wav"):
        FileSource(bad)
