"""The GE2E voice encoder's front end in NumPy, and the shape of its graph (memocmt.voice runs it,
memocmt.onnx.voice builds it).

Front end, as the encoder was trained: 16 kHz audio raised to -30 dBFS when quieter (never
lowered), a power mel spectrogram (25 ms periodic Hann window, 10 ms hop, frames centred with
zero padding, 40 Slaney-normalised mel bands from 0 to 8 kHz; no logarithm), cut into partial
utterances of 160 frames (1.6 s) that start every 77 frames (1.3 a second; the last is kept if
it covers at least 3/4 of its span, the audio zero-padded). Each partial is embedded and the
utterance embedding is the normalised mean of the partials.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400  # samples in the 25 ms analysis window
HOP = 160  # samples between frames: 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # frames in a partial utterance: 1.6 s
PARTIAL_STEP = 77  # frames between partial starts: round(16000 / 1.3 / 160), 1.3 partials a second
MIN_COVERAGE = 0.75  # the last partial is kept when the audio covers this much of it
TARGET_DBFS = -30.0  # quieter audio is raised to this level
EMBED_DIMS = 256
INPUT_NAME, OUTPUT_NAME = "mels", "embeddings"  # the graph: (B, 160, 40) power mels -> (B, 256) unit vectors


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters on Slaney's mel scale, each scaled to unit area."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.flags.writeable = False
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann


def normalize_volume(audio: np.ndarray) -> np.ndarray:
    """Raise quiet audio to TARGET_DBFS (mean power); louder audio and silence are left as they are."""
    power = float(np.mean(np.square(audio, dtype=np.float64))) if len(audio) else 0.0
    if power <= 0.0:
        return audio
    gain_db = TARGET_DBFS - 10.0 * np.log10(power)
    return audio * np.float32(10.0 ** (gain_db / 20.0)) if gain_db > 0 else audio


def mel_power(audio: np.ndarray) -> np.ndarray:
    """(frames, N_MELS) power mel spectrogram of float 16 kHz audio; frame i is centred on sample i * HOP."""
    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(audio, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _window(), axis=-1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    return power @ mel_filterbank().T


def partial_starts(n_samples: int) -> list[int]:
    """First frame of each partial utterance of a clip of n_samples (at least one)."""
    n_frames = -(-(n_samples + 1) // HOP)
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + PARTIAL_STEP + 1), PARTIAL_STEP))
    if len(starts) > 1 and (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP) < MIN_COVERAGE:
        starts.pop()
    return starts


def partial_mels(audio: np.ndarray) -> np.ndarray:
    """(partials, PARTIAL_FRAMES, N_MELS) encoder input for one utterance of float 16 kHz audio."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"A voice embedding needs mono audio (one dimension), not shape {audio.shape}.")
    if not len(audio):
        raise ValueError("A voice embedding needs at least one audio sample.")
    starts = partial_starts(len(audio))
    needed = (starts[-1] + PARTIAL_FRAMES) * HOP
    audio = normalize_volume(audio)
    if needed >= len(audio):
        audio = np.pad(audio, (0, needed - len(audio)))
    mels = mel_power(audio)
    return np.stack([mels[s : s + PARTIAL_FRAMES] for s in starts])


def pool_partials(partials: np.ndarray) -> np.ndarray:
    """(P, EMBED_DIMS) unit partial embeddings -> the utterance's unit embedding."""
    mean = np.asarray(partials, dtype=np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)
