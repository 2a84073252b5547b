"""Acoustic conditions: parsing, repeatability, SNR and level as specified, rooms' RT60."""

import numpy as np
import pytest

from memocmt.degrade import Condition, ConditionError, active_level, mix_at_snr, parse_conditions


def _speech(seconds=2.0, seed=0):
    """A voiced-like test signal with pauses: harmonic bursts separated by silence."""
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = (np.sin(2 * np.pi * 1.5 * t) > 0).astype(np.float32)
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900), 1))
    return (0.2 * envelope * tone).astype(np.float32)


@pytest.mark.parametrize("spec", ["pink 20", "white 5", "brown 10", "clicks 20", "telephone", "clip 20", "level -30",
                                  "pink 5:30", "babble 10"])
def test_conditions_keep_length_and_repeat_exactly(spec):
    audio, sources = _speech(), [_speech(1.3, 1), _speech(0.7, 2)]
    c = Condition.parse(spec)
    assert Condition.parse(c.spec) == c
    out = c.apply(audio, key="clip-1", sources=sources)
    assert out.dtype == np.float32 and len(out) == len(audio) and np.all(np.abs(out) <= 1)
    assert np.array_equal(out, c.apply(audio, key="clip-1", sources=sources))
    if c.kind not in ("telephone", "clip", "level"):
        assert not np.array_equal(out, c.apply(audio, key="clip-2", sources=sources))


def test_snr_is_over_active_speech():
    audio = _speech()
    noise = np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32)
    mixed = mix_at_snr(audio, noise, 10.0)
    added = mixed - audio
    assert 10 * np.log10(active_level(audio) / np.mean(added.astype(np.float64) ** 2)) == pytest.approx(10.0, abs=0.01)
    # pauses do not change the speech level: the same speech with twice the silence gets the same noise level
    padded = np.concatenate([audio, np.zeros_like(audio)])
    assert active_level(padded) == pytest.approx(active_level(audio), rel=0.05)


def test_level_and_clip():
    audio = _speech()
    assert np.allclose(Condition.parse("level -20").apply(audio), audio * 0.1, atol=1e-7)
    assert np.abs(Condition.parse("clip 20").apply(audio)).max() == pytest.approx(1.0)


def test_ranges_draw_per_key():
    c = Condition.parse("pink 5:30")
    draws = {c.draw(np.random.default_rng(s))[0] for s in range(20)}
    assert len(draws) == 20 and all(5 <= d <= 30 for d in draws)


@pytest.mark.parametrize("spec,message", [("pink", "write it as"), ("room 0.6", "write it as"), ("foo 3", "does not start"),
                                          ("pink x", "not a number"), ("pink 100", "must lie in"), ("pink 30:5", "must lie in")])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ConditionError, match=message):
        Condition.parse(spec)


def test_repeats_and_missing_sources_refused():
    with pytest.raises(ConditionError, match="repeat"):
        parse_conditions(["pink 20", "pink 20"])
    with pytest.raises(ConditionError, match="other speakers"):
        Condition.parse("babble 10").apply(_speech())


def test_room_reverberates_with_its_rt60_and_keeps_timing():
    pra = pytest.importorskip("pyroomacoustics")
    from memocmt.degrade import room_impulse_response

    for rt60 in (0.3, 0.6):
        rir = room_impulse_response(rt60, 3.0, 0)
        assert abs(pra.experimental.measure_rt60(rir, fs=16000) - rt60) < 0.08
        assert np.argmax(np.abs(rir)) < 16  # direct sound first, its delay removed
    audio = _speech()
    out = Condition.parse("room 0.6 3").apply(audio, key="a")
    assert active_level(out) == pytest.approx(active_level(audio), rel=1e-3)
