"""Test audio for the live pipeline: espeak-ng speech, and a PulseAudio virtual microphone.

`VirtualMic` starts a private PulseAudio daemon (user mode, its own XDG_RUNTIME_DIR) with
a null sink whose monitor is remapped into a source, so PortAudio/sounddevice sees a real
input device; whatever `play()` sends into the sink comes out of that device. Clients
need the environment in `VirtualMic.env` (PULSE_SERVER and XDG_RUNTIME_DIR).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from memocmt.audio import SAMPLE_RATE, load_audio

SINK = "memocmt_vmic_sink"
SOURCE = "memocmt_vmic"


def espeak(text: str, path: Path | None = None) -> np.ndarray:
    """Speak `text` with espeak-ng (en-us, 150 wpm); float32 16 kHz mono."""
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True, capture_output=True)
        audio = load_audio(wav)
    if path is not None:
        sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    return audio


def missing_tools() -> list[str]:
    return [tool for tool in ("pulseaudio", "pactl", "pacat", "paplay") if shutil.which(tool) is None]


class VirtualMic:
    """A private PulseAudio daemon with a 16 kHz null sink and its monitor as the default source."""

    def __init__(self, rate: int = SAMPLE_RATE):
        self.rate = rate
        self.dir = Path(tempfile.mkdtemp(prefix="memocmt-pulse-"))
        runtime = self.dir / "runtime"
        runtime.mkdir(mode=0o700)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PULSE_SERVER=f"unix:{runtime}/pulse/native",
                        HOME=str(self.dir))
        self.log = self.dir / "pulse.log"
        self._keep_alive: subprocess.Popen | None = None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=20)

    def start(self) -> "VirtualMic":
        self._run("pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "--disallow-exit", "-n",
                  "--load=module-native-protocol-unix", f"--log-target=file:{self.log}")
        deadline = time.monotonic() + 15
        while self._run("pactl", "info", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PulseAudio did not start; see {self.log}")
            time.sleep(0.1)
        self._run("pactl", "load-module", "module-null-sink", f"sink_name={SINK}", f"rate={self.rate}",
                  "channels=1", "format=s16le")
        self._run("pactl", "load-module", "module-remap-source", f"source_name={SOURCE}", f"master={SINK}.monitor")
        self._run("pactl", "set-default-sink", SINK)
        self._run("pactl", "set-default-source", SOURCE)
        # Without a stream playing, the idle sink delivers audio 0.3-1.3 s late.
        self._keep_alive = subprocess.Popen(
            ["pacat", "--playback", f"--device={SINK}", "--latency-msec=10", f"--rate={self.rate}",
             "--channels=1", "--format=s16le", "/dev/zero"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return self

    def play(self, wav: Path) -> None:
        """Play a WAV into the sink; returns when it has been played."""
        self._run("paplay", f"--device={SINK}", "--latency-msec=20", str(wav))

    def stop(self) -> None:
        if self._keep_alive is not None:
            self._keep_alive.terminate()
            try:
                self._keep_alive.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._keep_alive.kill()
            self._keep_alive = None
        self._run("pulseaudio", "--kill", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "VirtualMic":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
