"""The memocmt-live command as a user runs it: one-sentence errors, files and stdin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from memocmt.audio import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]


def live(*args: str, stdin: bytes | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run realtime/live.py (the checkout script) with no audio server reachable by default."""
    base = dict(os.environ, PULSE_SERVER="unix:/nonexistent/pulse/native", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(REPO / "realtime" / "live.py"), *args],
        input=stdin, capture_output=True, timeout=timeout, env=env or base, cwd=REPO,
    )


def one_sentence(result: subprocess.CompletedProcess, pattern: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("memocmt-live: ") and pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from tests.pulse import espeak

    speech = espeak("Good morning, I am very happy to see you today.")
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    path = tmp_path_factory.mktemp("cli") / "speech.wav"
    sf.write(path, np.concatenate([gap, speech, gap, speech, gap]), SAMPLE_RATE, subtype="PCM_16")
    return path


def test_help_works_from_a_checkout():
    result = live("--help")
    assert result.returncode == 0
    assert b"--vad {webrtc,silero}" in result.stdout and b"--hangover-ms" in result.stdout


def test_missing_input_file():
    one_sentence(live("--input", "/nonexistent/talk.wav", "--no-emotion"), "Input file not found")


def test_a_file_with_no_samples_is_an_error_not_an_empty_session(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    one_sentence(live("--input", str(empty), "--no-emotion", "--fast"), "holds no audio (0 samples)")


def test_corrupt_input_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(os.urandom(4000))
    one_sentence(live("--input", str(bad), "--no-emotion"), "bad.wav")


def test_bad_rates():
    one_sentence(live("--input", "-", "--input-rate", "5", "--no-emotion", stdin=b""), "--input-rate must be between")
    one_sentence(live("--capture-rate", "0", "--no-emotion"), "--capture-rate must be between")


def test_no_microphone():
    one_sentence(live("--no-emotion"), "No audio input device found")


def test_missing_asr_model(speech_wav):
    one_sentence(live("--input", str(speech_wav), "--no-emotion", "--asr-model", "/nonexistent/whisper"), "ASR model directory not found")


def test_bad_emotion_bundle(speech_wav, tmp_path):
    one_sentence(live("--input", str(speech_wav), "--model", str(tmp_path)), "emotion model bundle")
    one_sentence(live("--input", str(speech_wav), "--model", str(tmp_path / "missing")), "bundle not found")


def test_bad_option_combinations_use_argparse():
    result = live("--realtime", "--no-emotion")
    assert result.returncode == 2 and b"apply to --input only" in result.stderr and b"Traceback" not in result.stderr
    result = live("--adapt-window", "0")
    assert result.returncode == 2 and b"--adapt-window must be at least 1" in result.stderr and b"Traceback" not in result.stderr


def test_file_at_full_speed_writes_jsonl_to_stdout_and_a_summary(speech_wav, tmp_path):
    result = live("--input", str(speech_wav), "--fast", "--no-emotion", "--jsonl", "-", "--save-audio", str(tmp_path / "wavs"))
    err = result.stderr.decode()
    assert result.returncode == 0, err
    records = [r for r in map(json.loads, result.stdout.decode().splitlines()) if r["type"] == "utterance"]
    assert len(records) == 2
    assert all(r["text"].lower().startswith("good morning") for r in records)
    assert all(r["label"] is None and Path(r["audio_path"]).is_file() for r in records)
    assert "session ended: end of input" in err and "utterances: 2" in err


def test_stdin_pcm_at_8k(speech_wav):
    import soxr

    audio, rate = sf.read(speech_wav, dtype="float32")
    pcm = (soxr.resample(audio, rate, 8000) * 32767).astype("<i2").tobytes()
    result = live("--input", "-", "--input-rate", "8000", "--no-emotion", "--plain", stdin=pcm)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert out.lower().count("good morning") == 2
    assert "utterances: 2" in out


def test_file_with_an_exported_emotion_bundle(speech_wav, tmp_path):
    """The real runtime path: a bundle exported from a (tiny) model classifies each utterance."""
    pytest.importorskip("torch")
    from memocmt.onnx.export import export_bundle
    from tests.tiny_models import build_tiny_model

    bundle = export_bundle(build_tiny_model(tmp_path / "models"), tmp_path / "bundle").path
    result = live("--input", str(speech_wav), "--fast", "--model", str(bundle), "--emotion-threads", "1", "--jsonl", "-")
    assert result.returncode == 0, result.stderr.decode()
    records = [r for r in map(json.loads, result.stdout.decode().splitlines()) if r["type"] == "utterance"]
    assert len(records) == 2
    for r in records:
        assert r["label"] in r["probabilities"] and abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["timings_ms"]["emotion"] > 0
