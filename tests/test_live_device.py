"""End to end on a real audio device: a PulseAudio virtual microphone fed with espeak-ng
speech, the `memocmt-live` command capturing it through PortAudio, then Ctrl-C."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from memocmt.audio import SAMPLE_RATE
from tests.pulse import VirtualMic, espeak, missing_tools

pytestmark = pytest.mark.audio_device

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["Good morning, I am very happy to see you today.", "Tomorrow we will walk along the river together."]


@pytest.fixture(scope="module")
def mic():
    missing = missing_tools() + ([] if shutil.which("espeak-ng") else ["espeak-ng"])
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian: pulseaudio pulseaudio-utils libasound2-plugins espeak-ng)")
    with VirtualMic() as vmic:
        yield vmic


def live_command(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "realtime" / "live.py"), *args]


def lines_of(stream) -> queue.Queue:
    """Collect a pipe's lines on a thread so the test can wait with a timeout."""
    q: queue.Queue = queue.Queue()

    def pump():
        for line in iter(stream.readline, ""):
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def wait_for(q: queue.Queue, seen: list[str], predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            return False
        seen.append(line)
        if predicate(line):
            return True
    return False


def test_unknown_device_is_one_sentence(mic):
    result = subprocess.run(live_command("--device", "no-such-microphone", "--no-emotion"),
                            env=mic.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "memocmt-live: No input device matches 'no-such-microphone'; run --list-devices to see the choices."
    )
    listing = subprocess.run(live_command("--list-devices"), env=mic.env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "*" in listing.stdout  # the default input is marked


def test_microphone_utterances_then_ctrl_c(mic, tmp_path):
    gap = np.zeros(int(1.0 * SAMPLE_RATE), dtype=np.float32)
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.concatenate([gap] + [x for s in SENTENCES for x in (espeak(s), gap)]), SAMPLE_RATE, subtype="PCM_16")

    proc = subprocess.Popen(
        live_command("--no-emotion", "--jsonl", "-", "--plain"),
        env=mic.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        out, err = lines_of(proc.stdout), lines_of(proc.stderr)
        err_seen: list[str] = []
        assert wait_for(err, err_seen, lambda line: line.startswith("listening:"), 60), "".join(err_seen)
        mic.play(wav)
        records: list[dict] = []
        out_seen: list[str] = []
        assert wait_for(out, out_seen, lambda line: len(records.append(json.loads(line)) or records) == 2, 20), out_seen
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        while wait_for(err, err_seen, lambda line: False, 0.5):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = "".join(err_seen)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    for record, sentence in zip(records, SENTENCES):
        first_two = " ".join(sentence.lower().split()[:2]).strip(",")
        assert record["text"].lower().startswith(first_two), record["text"]
        assert record["end_s"] > record["start_s"] > 0
        assert record["timings_ms"]["eos_to_result"] > 0
    # 1 s of silence was played between them (more if PulseAudio under-ran on a busy machine).
    assert 0.6 <= records[1]["start_s"] - records[0]["end_s"] <= 3.0
    assert "session ended: interrupted" in stderr
    assert "utterances: 2" in stderr
    assert "overflows: " in stderr and "dropped audio: " in stderr
