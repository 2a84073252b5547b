"""Encoder input features, in NumPy only, shared by the PyTorch model and the ONNX runtime.

Two kinds of audio encoder input exist:
  * "waveform": the float waveform itself (wav2vec2 / HuBERT / WavLM), optionally
    normalised to zero mean and unit variance per utterance, as their feature extractors do;
  * "log_mel": Whisper's 80-bin log-mel spectrogram, computed at the utterance's own length.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .audio import SAMPLE_RATE

N_FFT = 400  # 25 ms window at 16 kHz
HOP_LENGTH = 160  # 10 ms hop: 100 mel frames per second
N_MELS = 80


@dataclass(frozen=True)
class FeatureSpec:
    """What an audio encoder expects as input; stored in checkpoints and ONNX bundles."""

    kind: str  # "waveform" or "log_mel"
    sample_rate: int = SAMPLE_RATE
    normalize: bool = False  # waveform: zero-mean / unit-variance per utterance
    n_mels: int = N_MELS  # log_mel only
    n_fft: int = N_FFT  # log_mel only
    hop_length: int = HOP_LENGTH  # log_mel only

    def to_dict(self) -> dict:
        return asdict(self)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-scale, area-normalised triangular mel filters, shape (n_mels, n_fft // 2 + 1).

    This is the filterbank Whisper was trained with (librosa's default `htk=False, norm="slaney"`).
    """
    f_sp = 200.0 / 3  # Hz per mel in the linear part of the Slaney scale
    min_log_hz = 1000.0  # the scale turns logarithmic above 1 kHz
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        return hz / f_sp if hz < min_log_hz else min_log_mel + np.log(hz / min_log_hz) / logstep

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel < min_log_mel, mel * f_sp, min_log_hz * np.exp(logstep * (mel - min_log_mel)))

    edges_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    left, centre, right = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None, :] - left) / (centre - left)
    falling = (right - bin_hz[None, :]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (right - left))  # constant energy per band
    return weights.astype(np.float32)


_MEL_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _cached_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    key = (sample_rate, n_fft, n_mels)
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = mel_filterbank(sample_rate, n_fft, n_mels)
    return _MEL_CACHE[key]


def log_mel_spectrogram(audio: np.ndarray, spec: FeatureSpec | None = None) -> np.ndarray:
    """Whisper's log-mel features of one utterance at its own length: (n_mels, len(audio) // hop).

    Same recipe as Whisper (periodic Hann window, centred reflect-padded STFT, power
    spectrum, log10 clipped to 8 below the maximum, then (x + 4) / 4), without padding to 30 s.
    """
    spec = spec or FeatureSpec("log_mel")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"log_mel_spectrogram needs 1-D audio, got shape {audio.shape}.")
    if audio.size <= spec.n_fft // 2:
        raise ValueError(f"Audio of {audio.size} samples is too short for a {spec.n_fft}-point STFT.")
    half = spec.n_fft // 2
    padded = np.pad(audio, (half, half), mode="reflect")
    n_frames = 1 + (padded.size - spec.n_fft) // spec.hop_length
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(n_frames, spec.n_fft),
        strides=(padded.strides[0] * spec.hop_length, padded.strides[0]),
        writeable=False,
    )
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(spec.n_fft) / spec.n_fft)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (frames, bins)
    power = power[:-1]  # Whisper drops the last frame: len // hop frames remain
    with _single_threaded_blas():
        mel = _cached_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels) @ power.T.astype(np.float32)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


@lru_cache(maxsize=1)
def _blas_threads():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController().select(user_api="blas")


def _single_threaded_blas():
    """One BLAS thread for the small mel projection. With more, OpenBLAS's workers keep spinning
    after the call and take the cores from the encoder that runs next: measured on 2 cores, the
    int8 Whisper encoder graph ran in 10 ms back to back but 13 ms right after the features and
    17 ms right after a large NumPy matmul."""
    threads = _blas_threads()
    return threads.limit(limits=1) if threads else contextlib.nullcontext()


def waveform_features(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """The waveform as a wav2vec2-family encoder wants it: (samples,) float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if spec.normalize:
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    return audio.astype(np.float32, copy=False)


def extract_features(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Features of one utterance: (n_mels, frames) for log_mel, (samples,) for waveform."""
    if spec.kind == "log_mel":
        return log_mel_spectrogram(audio, spec)
    if spec.kind == "waveform":
        return waveform_features(audio, spec)
    raise ValueError(f"Unknown feature kind {spec.kind!r}; expected 'waveform' or 'log_mel'.")


def pad_batch(items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length features, zero-padding the last axis; returns (batch, lengths)."""
    if not items:
        raise ValueError("Cannot batch an empty list of features.")
    lengths = np.array([x.shape[-1] for x in items], dtype=np.int64)
    out = np.zeros((len(items), *items[0].shape[:-1], int(lengths.max())), dtype=np.float32)
    for i, x in enumerate(items):
        out[i, ..., : x.shape[-1]] = x
    return out, lengths
