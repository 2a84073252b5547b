"""The rooms people talk in: noise, babble, transients, reverberation and device effects.

One `Condition` describes one way the world changes clean speech, written as a short spec:

    pink 20          coloured noise (white | pink | brown) at 20 dB SNR over the speech
    babble 10        six other voices at 10 dB (needs `sources`: clips of speakers not under test)
    clicks 20        keyboard-like bursts at 20 dB (power of the burst track over the speech)
    room 0.6 3       a 6 x 5 x 3 m room, RT60 0.6 s, talker 3 m from the microphone
    telephone        an 8 kHz G.711 telephone channel: 300-3400 Hz, mu-law, back to 16 kHz
    clip 20          20 dB too much gain into a converter that clips at full scale
    level -30        the whole signal 30 dB down (a distant or quiet microphone)

A number can be a range, "pink 5:30" or "room 0.3:0.9 1:4": each clip then draws its own value,
the way training augments (memocmt.perturb). Every draw comes from a seed made of the condition
and a key (a file path, a session name), so a condition applied twice to the same clip gives
the same samples: benchmarks are repeatable and augmented embeddings can be cached.

SNR is measured against the active speech level (20 ms frames within 35 dB of the loudest), so
silence between utterances does not lower the speech level and a session with long pauses gets
the same noise as one clip. Rooms keep the direct sound's timing (the propagation delay is
removed) and the speech's active level, so only the reverberation changes. Everything here is
pure numpy/scipy on float32 16 kHz mono except `room`, which simulates its impulse response
with pyroomacoustics (image sources; cached per geometry).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE

ROOM_DIM_M = (6.0, 5.0, 3.0)  # a small meeting room
SPEED_OF_SOUND = 343.0  # m/s
FRAME_S = 0.02  # frame of the active speech level
ACTIVE_RANGE_DB = 35.0  # frames this far below the loudest frame count as pauses
BABBLE_TALKERS = 6
CLICK_RATE_HZ = 3.0  # mean bursts per second
COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f**exponent
KINDS = (*COLORS, "babble", "clicks", "room", "telephone", "clip", "level")
_ARGS = {**{c: ("snr_db",) for c in COLORS}, "babble": ("snr_db",), "clicks": ("snr_db",),
         "room": ("rt60_s", "distance_m"), "telephone": (), "clip": ("gain_db",), "level": ("gain_db",)}
_BOUNDS = {"snr_db": (-10.0, 60.0), "rt60_s": (0.1, 2.0), "distance_m": (0.3, 4.0), "gain_db": (-60.0, 40.0)}


class ConditionError(ValueError):
    """A condition spec that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Condition:
    kind: str  # one of KINDS
    values: tuple[tuple[float, float], ...] = ()  # (low, high) per argument; low == high is a fixed value

    @classmethod
    def parse(cls, spec: str) -> "Condition":
        parts = str(spec).split()
        if not parts or parts[0] not in KINDS:
            raise ConditionError(f"Condition {spec!r} does not start with one of {', '.join(KINDS)} "
                                 "(e.g. 'pink 20', 'babble 10', 'room 0.6 3', 'telephone').")
        kind, names = parts[0], _ARGS[parts[0]]
        if len(parts) - 1 != len(names):
            usage = " ".join(f"<{n}>" for n in names)
            raise ConditionError(f"Condition {spec!r}: write it as '{kind}{' ' + usage if usage else ''}'.")
        values = []
        for name, text in zip(names, parts[1:]):
            try:
                low, high = (float(t) for t in text.split(":")) if ":" in text else (float(text),) * 2
            except ValueError:
                raise ConditionError(f"Condition {spec!r}: {text!r} is not a number or a range 'a:b'.") from None
            lo, hi = _BOUNDS[name]
            if not lo <= low <= high <= hi:
                raise ConditionError(f"Condition {spec!r}: {name} must lie in [{lo:g}, {hi:g}] (a range low:high).")
            values.append((low, high))
        return cls(kind, tuple(values))

    @property
    def spec(self) -> str:
        return " ".join([self.kind, *(f"{a:g}" if a == b else f"{a:g}:{b:g}" for a, b in self.values)])

    @property
    def name(self) -> str:
        """Short tag for ids, speaker names and file names: 'pink20', 'room0.6-3', 'babble5:25'."""
        return self.kind + "-".join(f"{a:g}" if a == b else f"{a:g}:{b:g}" for a, b in self.values)

    @property
    def needs_sources(self) -> bool:
        return self.kind == "babble"

    def draw(self, rng: np.random.Generator) -> tuple[float, ...]:
        """This clip's values: fixed ones as they are, ranges drawn uniformly."""
        return tuple(a if a == b else float(rng.uniform(a, b)) for a, b in self.values)

    def apply(self, audio: np.ndarray, key: str = "", sources: "list[np.ndarray] | None" = None,
              sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """`audio` (float32 mono) as heard in this condition; `key` seeds every random choice."""
        if sample_rate != SAMPLE_RATE:
            raise ConditionError(f"Conditions work on {SAMPLE_RATE} Hz audio, not {sample_rate} Hz.")
        audio = np.asarray(audio, dtype=np.float32)
        rng = np.random.default_rng(seed(self.spec, key))
        values = self.draw(rng)
        if self.kind in COLORS:
            out = mix_at_snr(audio, coloured_noise(len(audio), COLORS[self.kind], rng), values[0])
        elif self.kind == "babble":
            if not sources:
                raise ConditionError("Condition 'babble' needs clips of other speakers to make the babble from.")
            out = mix_at_snr(audio, babble(len(audio), sources, rng), values[0])
        elif self.kind == "clicks":
            out = mix_at_snr(audio, clicks(len(audio), rng), values[0])
        elif self.kind == "room":
            out = reverberate(audio, values[0], values[1], position=int(rng.integers(4)))
        elif self.kind == "telephone":
            out = telephone(audio)
        elif self.kind == "clip":
            out = np.clip(audio * 10 ** (values[0] / 20), -1.0, 1.0)
        else:  # level
            out = audio * 10 ** (values[0] / 20)
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def parse_conditions(specs: list[str]) -> list[Condition]:
    out = [Condition.parse(s) for s in specs]
    if len({c.spec for c in out}) != len(out):
        raise ConditionError(f"Conditions {list(specs)} repeat one; list each once.")
    return out


def seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha1("\0".join(parts).encode()).digest()[:8], "little")


def active_level(audio: np.ndarray) -> float:
    """Mean power of the active speech (frames within ACTIVE_RANGE_DB of the loudest)."""
    n = int(FRAME_S * SAMPLE_RATE)
    frames = np.asarray(audio, dtype=np.float64)[: len(audio) // n * n].reshape(-1, n) if len(audio) >= n \
        else np.asarray(audio, dtype=np.float64)[None]
    power = (frames ** 2).mean(axis=1)
    if power.max() <= 0:
        return 0.0
    return float(power[power >= power.max() * 10 ** (-ACTIVE_RANGE_DB / 10)].mean())


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so the speech's active level is `snr_db` above the noise's mean power."""
    noise_power = float(np.mean(np.asarray(noise, dtype=np.float64) ** 2))
    level = active_level(speech)
    if noise_power <= 0 or level <= 0:
        return np.asarray(speech, dtype=np.float32)
    gain = np.sqrt(level / noise_power * 10 ** (-snr_db / 10))
    return (speech + gain * noise).astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1/f**exponent (0 white, 1 pink, 2 brown), unit power."""
    spectrum = np.fft.rfft(rng.standard_normal(max(n, 2)))
    f = np.fft.rfftfreq(max(n, 2), 1 / SAMPLE_RATE)
    f[0] = f[1]  # no infinite DC
    spectrum *= (f / 1000.0) ** (-exponent / 2)
    noise = np.fft.irfft(spectrum, max(n, 2))[:n]
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


def babble(n: int, sources: list[np.ndarray], rng: np.random.Generator, talkers: int = BABBLE_TALKERS) -> np.ndarray:
    """`talkers` voices at equal level, each a run of random source clips from a random offset."""
    out = np.zeros(n, dtype=np.float64)
    for _ in range(talkers):
        pieces, length = [], 0
        while length < n:
            clip = np.asarray(sources[int(rng.integers(len(sources)))], dtype=np.float64)
            if not pieces:
                clip = clip[int(rng.integers(max(len(clip) // 2, 1))):]
            pieces.append(clip)
            length += len(clip)
        voice = np.concatenate(pieces)[:n]
        level = active_level(voice)
        out += voice / np.sqrt(level) if level > 0 else 0.0
    return out.astype(np.float32)


def clicks(n: int, rng: np.random.Generator, rate_hz: float = CLICK_RATE_HZ) -> np.ndarray:
    """Keyboard- and click-like bursts: 2-15 ms of decaying high-passed noise at Poisson times."""
    out = np.zeros(n, dtype=np.float32)
    for start in np.sort(rng.integers(0, max(n, 1), rng.poisson(rate_hz * n / SAMPLE_RATE))):
        length = int(rng.uniform(0.002, 0.015) * SAMPLE_RATE)
        burst = np.diff(rng.standard_normal(length + 1)) * np.exp(-np.arange(length) / (length / 4))
        burst *= rng.uniform(0.3, 1.0)
        end = min(n, start + length)
        out[start:end] += burst[: end - start]
    return out


def telephone(audio: np.ndarray) -> np.ndarray:
    """An 8 kHz narrow-band call: 300-3400 Hz band, 8-bit mu-law, played back at 16 kHz."""
    from scipy.signal import butter, resample_poly, sosfilt

    narrow = resample_poly(audio, 1, 2)
    narrow = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE // 2, output="sos"), narrow)
    mu = 255.0
    coded = np.sign(narrow) * np.log1p(mu * np.minimum(np.abs(narrow), 1.0)) / np.log1p(mu)
    coded = np.round(coded * 127) / 127  # 8 bits
    narrow = np.sign(coded) * ((1 + mu) ** np.abs(coded) - 1) / mu
    return resample_poly(narrow, 2, 1)[: len(audio)].astype(np.float32)


def reverberate(audio: np.ndarray, rt60_s: float, distance_m: float, position: int = 0) -> np.ndarray:
    """`audio` spoken `distance_m` from the microphone in a ROOM_DIM_M room with reverberation time
    `rt60_s`: same active level, direct sound at the same time."""
    from scipy.signal import fftconvolve

    rir = room_impulse_response(round(rt60_s, 1), round(distance_m * 2) / 2, position)
    wet = fftconvolve(audio, rir)[: len(audio)]
    level, wet_level = active_level(audio), active_level(wet)
    return (wet * np.sqrt(level / wet_level) if wet_level > 0 else wet).astype(np.float32)


@functools.lru_cache(maxsize=64)
def room_impulse_response(rt60_s: float, distance_m: float, position: int = 0) -> np.ndarray:
    """Impulse response from a talker `distance_m` away to the microphone (one of four placements),
    starting at the direct sound. Image-source simulation, the absorption set by Sabine's formula."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise ConditionError("Room conditions need pyroomacoustics; install it with "
                             "`pip install pyroomacoustics` (or the project's `noise` extra).") from None
    width, depth, height = ROOM_DIM_M
    absorption, max_order = _absorption(rt60_s)
    room = pra.ShoeBox(ROOM_DIM_M, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
    mic = np.array([0.8 + 0.4 * (position % 2), depth / 2, 1.2])
    reach = min(distance_m, width - 0.5 - mic[0])  # along the room, the rest across it
    across = np.sqrt(max(distance_m ** 2 - reach ** 2, 0.0)) * (1 if position < 2 else -1)
    source = mic + np.array([reach, across, 0.4])
    source[1] = np.clip(source[1], 0.3, depth - 0.3)
    room.add_source(source.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    direct = int(np.argmax(np.abs(rir[: int(0.05 * SAMPLE_RATE) + 1 + int(distance_m / SPEED_OF_SOUND * SAMPLE_RATE)])))
    rir = rir[max(direct - 8, 0):]  # keep the fractional-delay filter's leading taps
    return (rir / np.abs(rir).max()).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _absorption(rt60_s: float) -> tuple[float, int]:
    """Wall absorption and image-source order that give this room a measured RT60 of `rt60_s`.
    Sabine's formula alone overshoots in a small room with image sources (0.9 s asked, 1.27 s
    measured), so the target it is given is corrected by what a reference placement measures."""
    import pyroomacoustics as pra

    target = rt60_s
    for _ in range(3):
        absorption, max_order = pra.inverse_sabine(target, ROOM_DIM_M)
        room = pra.ShoeBox(ROOM_DIM_M, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
        room.add_source([3.0, 2.5, 1.6])
        room.add_microphone([1.0, 2.5, 1.2])
        room.compute_rir()
        measured = pra.experimental.measure_rt60(np.asarray(room.rir[0][0]), fs=SAMPLE_RATE)
        if abs(measured - rt60_s) < 0.03:
            break
        target = float(np.clip(target * rt60_s / measured, 0.05, 3.0))
    return absorption, max_order
