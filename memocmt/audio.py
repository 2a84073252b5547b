"""Audio I/O and the one place where samples are normalised.

Everything downstream of this module sees float32 mono audio in [-1, 1] at 16 kHz.
`load_audio` does the I/O (decoding, down-mixing, resampling); `to_float32` and
`check_audio` are pure and are what in-memory callers (microphone, tests) use.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # Hz, what every encoder and the VAD expect
MIN_AUDIO_S = 0.1  # shorter utterances carry no usable emotion cue
MIN_SAMPLES = int(MIN_AUDIO_S * SAMPLE_RATE)  # 1600 samples


class AudioError(ValueError):
    """Audio that cannot be used as it is; the message says what to do."""


def to_float32(samples: np.ndarray) -> np.ndarray:
    """Scale integer PCM to float32 in [-1, 1]; float input is passed through as float32.

    This is the only place integer samples are scaled. Feeding raw int16 values to a
    speech encoder (as the original MemoCMT code did) silently ruins its features.
    """
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return (samples.astype(np.float64) / 2147483648.0).astype(np.float32)
    if samples.dtype == np.uint8:  # 8-bit WAV is unsigned with a 128 offset
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise AudioError(f"Unsupported sample type {samples.dtype}; pass int16, int32, uint8 or float audio.")


def check_audio(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, name: str = "audio") -> np.ndarray:
    """Validate in-memory audio and return it as contiguous float32 mono at 16 kHz.

    Raises AudioError with one sentence for stereo, the wrong rate, empty, too short,
    non-finite or out-of-range input, instead of letting it produce a silent wrong answer.
    """
    if sample_rate != SAMPLE_RATE:
        raise AudioError(
            f"{name} is at {sample_rate} Hz but {SAMPLE_RATE} Hz is required; "
            "resample it first (memocmt.audio.resample or load_audio)."
        )
    audio = to_float32(audio)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise AudioError(
            f"{name} has shape {tuple(audio.shape)} but mono audio (one channel) is required; "
            "average the channels first (load_audio does this for files)."
        )
    if audio.size < MIN_SAMPLES:
        raise AudioError(
            f"{name} is {audio.size / SAMPLE_RATE * 1000:.0f} ms long; at least "
            f"{MIN_AUDIO_S * 1000:.0f} ms of speech is needed."
        )
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{name} contains NaN or infinite samples; the recording is corrupt.")
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0 + 1e-3:
        raise AudioError(
            f"{name} has samples up to {peak:.1f}, outside [-1, 1]; "
            "pass integer PCM as int16 so it is scaled, or divide float audio by 32768."
        )
    return np.ascontiguousarray(audio, dtype=np.float32)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float audio (1-D, or 2-D frames x channels) with soxr's high-quality filter."""
    if orig_sr == target_sr:
        return audio
    if orig_sr <= 0:
        raise AudioError(f"Invalid sample rate {orig_sr} Hz.")
    import soxr

    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of (frames, channels) audio; 1-D audio is returned unchanged."""
    if audio.ndim == 1:
        return audio
    return audio.mean(axis=1, dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any file soundfile (or, failing that, PyAV) can decode as float32 mono at `sample_rate`.

    Raises AudioError naming the file when it is missing, unreadable, empty or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"Audio file not found: {path}")
    try:
        audio, sr = _read_soundfile(path)
    except AudioError:
        raise
    except Exception as sf_error:  # soundfile cannot decode it: try PyAV (mp3, m4a, ...)
        try:
            audio, sr = _read_av(path)
        except ImportError:
            raise AudioError(f"Cannot decode {path}: {sf_error}") from sf_error
        except Exception as av_error:
            raise AudioError(f"Cannot decode {path}: it is not a readable audio file ({av_error}).") from av_error
    if audio.size == 0:
        raise AudioError(f"{path} contains no audio samples.")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path} contains NaN or infinite samples; the file is corrupt.")
    audio = resample(to_mono(audio), sr, sample_rate)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    return audio, int(sr)


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioError(f"{path} has no audio stream.")
        sr = stream.rate
        chunks = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()  # (channels, samples) planar or (1, samples*channels) packed
            if frame.format.is_planar:
                chunks.append(to_float32(data).T)
            else:
                chunks.append(to_float32(data).reshape(-1, len(frame.layout.channels)))
    if not chunks:
        return np.zeros(0, dtype=np.float32), sr
    return np.concatenate(chunks, axis=0), sr


def audio_file_key(path: str | os.PathLike) -> str:
    """Identity of an audio file as it is now: a hash of its bytes (what the embedding and
    transcript caches key on).

    Content, not path and modification time: a corpus copied to another folder or machine, or
    restored from a backup, keeps its cached results; an edited file gets new ones. The hash is
    remembered per (path, size, modification time) for the life of the process.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return _content_key(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 16)
def _content_key(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"blake2b:{digest.hexdigest()}|{size}"
