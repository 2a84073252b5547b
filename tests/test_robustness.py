"""benchmarks/robustness.py's plumbing on a tiny fake session: conditions applied to the whole
session, clips cut back at their bounds, the front end read from memocmt-live's options, scoring
with missed clips, and the reports (no models, no real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import robustness as rb
from benchmarks.live_accuracy import Clip
from memocmt.audio import SAMPLE_RATE, load_audio
from memocmt.degrade import ConditionError
from memocmt.manifest import Utterance

LABELS = ["neutral", "happy", "sad", "angry"]


def _tone(seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * f0 * t) * np.hanning(len(t))).astype(np.float32)


@pytest.fixture
def session(tmp_path) -> dict:
    """Two clips with 0.5 s of silence around them, as build_session lays them out."""
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    a, b = _tone(0.8, 200), _tone(0.6, 300)
    audio = np.concatenate([gap, a, gap, b, gap])
    clips = [Clip("a", "S1", "happy", 0.5, 0.5 + len(a) / SAMPLE_RATE),
             Clip("b", "S1", "sad", 1.8, 1.8 + len(b) / SAMPLE_RATE)]
    items = [Utterance(Path(f"/nowhere/{c.id}.wav"), "words", c.label, "S1", "test", id=c.id) for c in clips]
    return {"name": "session-S1", "audio": audio, "clips": clips, "items": items, "parts": [a, b]}


def test_grid_parses_and_rejects_bad_or_repeated_specs():
    grid = rb.parse_grid(list(rb.GRID))
    assert grid[0] is None and len(grid) == len(rb.GRID) == 22
    assert [rb.condition_spec(c) for c in grid] == list(rb.GRID)
    with pytest.raises(ConditionError, match="repeat"):
        rb.parse_grid(["pink 10", "pink 10.0"])
    with pytest.raises(ConditionError, match="does not start with"):
        rb.parse_grid(["kitchen 10"])


def test_condition_runs_through_the_pauses_and_clips_cut_back(session, tmp_path):
    (pink,) = rb.parse_grid(["pink 10"])
    noisy = rb.degrade(session["audio"], pink, session["name"], None)
    assert len(noisy) == len(session["audio"])
    assert np.std(noisy[: SAMPLE_RATE // 4]) > 0.005  # noise in the leading silence too
    np.testing.assert_array_equal(noisy, rb.degrade(session["audio"], pink, session["name"], None))  # keyed, repeatable
    assert not np.array_equal(noisy, rb.degrade(session["audio"], pink, "session-S2", None))
    clean = rb.cut_clips(rb.degrade(session["audio"], None, session["name"], None), session["clips"])
    for got, want in zip(clean, session["parts"]):
        np.testing.assert_array_equal(got, want)
    (babble,) = rb.parse_grid(["babble 10"])
    with pytest.raises(ConditionError, match="needs clips"):
        rb.degrade(session["audio"], babble, session["name"], None)


def test_prepare_writes_sessions_and_offline_clips(session, tmp_path):
    (babble,) = rb.parse_grid(["babble 5"])
    sources = [_tone(0.5, 150), _tone(0.7, 250)]
    wavs, items = rb.prepare_condition(babble, [session], tmp_path, sources, rb.FrontEnd())
    assert wavs == [tmp_path / "babble5" / "session-S1.wav"]
    written = load_audio(wavs[0])
    assert len(written) == len(session["audio"])
    assert [u.id for u in items] == ["a", "b"] and all(Path(u.audio).is_file() for u in items)
    first = load_audio(items[0].audio)
    np.testing.assert_allclose(first, rb.cut_clips(written, session["clips"])[0], atol=1e-6)
    assert not np.allclose(first, session["parts"][0], atol=1e-3)  # the babble is in the clip
    wavs, items = rb.prepare_condition(None, [session], tmp_path / "x", None, rb.FrontEnd(), offline=False)
    assert len(wavs) == 1 and items == []


def test_front_end_follows_the_live_options():
    assert rb.FrontEnd.from_live_args([]) == rb.FrontEnd("off", ())
    assert not rb.FrontEnd.from_live_args(["--vad", "silero"]).enhances_emotion
    front = rb.FrontEnd.from_live_args(["--denoise", "dfn3", "--denoise-for", "vad,emotion"])
    assert front.denoise_for == ("vad", "emotion") and front.enhances_emotion
    assert not rb.FrontEnd.from_live_args(["--denoise", "dfn3", "--denoise-for", "vad,asr"]).enhances_emotion


def _result(start, end, label, index=0):
    probs = {c: 0.1 for c in LABELS}
    probs[label] = 0.7
    return {"type": "utterance", "index": index, "start_s": start, "end_s": end, "label": label, "probabilities": probs}


def _revision(index, label):
    return {**_result(0, 0, label, index), "type": "revision"}


def test_scoring_counts_missed_clips(session):
    right_and_missed = [{"results": [_result(0.45, 1.35, "happy")]}]  # clip b is never heard
    live = rb.score_condition(LABELS, [session], right_and_missed)
    assert live["missed"] == 1 and live["n"] == 1 and live["ua"] == pytest.approx(1.0)
    assert live["ua_missed_wrong"] == pytest.approx(0.5)  # happy right, sad missed
    both = rb.score_condition(LABELS, [session], [{"results": [_result(0.45, 1.35, "happy"), _result(1.7, 2.5, "angry"),
                                                               _result(3.0, 3.2, "sad")]}])
    assert both["missed"] == 0 and both["spurious"] == 1 and both["ua_missed_wrong"] == pytest.approx(0.5)


def test_scoring_applies_revisions_in_hindsight(session):
    shown = [_result(0.45, 1.35, "angry", 1), _result(1.7, 2.5, "angry", 2)]  # both wrong when shown
    live = rb.score_condition(LABELS, [session], [{"results": shown, "revisions": [_revision(1, "happy"),
                                                                                   _revision(2, "angry")]}])
    assert live["ua"] == pytest.approx(0.0)  # as shown
    assert live["hindsight"]["ua"] == pytest.approx(0.5) and live["hindsight"]["changed"] == 1


def test_reports_and_plots(tmp_path):
    rows = [{"spec": spec, "name": spec, "live": {"ua": ua, "ece": 0.1, "ua_missed_wrong": ua, "missed": 0, "spurious": 0},
             "offline": {"ua": ua + 0.05, "ece": 0.1}}
            for spec, ua in [("clean", 0.7), ("pink 20", 0.6), ("pink 10", 0.5), ("babble 10", 0.3)]]
    result = {"tag": "t", "model": "m", "data": "d", "clips": 4, "live_args": ["--denoise", "dfn3"],
              "front_end": {"denoise": "dfn3", "denoise_for": ["emotion"], "enhances_emotion": True},
              "machine": {"cpu": "x", "cpu_flags": ["avx2"]}, "seconds": 1.0, "conditions": rows}
    md = rb.to_markdown(result)
    assert "| pink 10 | 50.0 |" in md and "enhanced (dfn3)" in md
    other = {**result, "tag": "u", "conditions": rows[:2]}
    table = rb.comparison_markdown([result, other])
    assert "| babble 10 | 30.0 / 30.0 / 35.0 (0.100) | - |" in table
    rb.plot([result, other], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
