"""Segmenter logic on synthetic frames, and the two real frame classifiers."""

from __future__ import annotations

import numpy as np
import pytest

from memocmt.audio import SAMPLE_RATE
from memocmt.live.errors import LiveError
from memocmt.live.vad import SileroClassifier, Segmenter, VadConfig, WebrtcClassifier, make_classifier

FRAME = 480  # 30 ms


class LoudIsSpeech:
    """Deterministic classifier: a frame is speech when its mean magnitude exceeds 0.1."""

    frame_samples = FRAME

    def __init__(self):
        self.resets = 0

    def is_speech(self, frame: np.ndarray) -> bool:
        assert frame.shape == (FRAME,)
        return float(np.abs(frame).mean()) > 0.1

    def reset(self) -> None:
        self.resets += 1


def signal(*parts: tuple[str, float]) -> np.ndarray:
    """('s', seconds) of 'speech' (a loud square wave) and ('q', seconds) of quiet."""
    out = []
    for kind, seconds in parts:
        n = int(round(seconds * SAMPLE_RATE))
        if kind == "s":
            out.append(np.where(np.arange(n) % 40 < 20, 0.5, -0.5).astype(np.float32))
        else:
            out.append(np.full(n, 0.001, dtype=np.float32))
    return np.concatenate(out)


def run(audio: np.ndarray, block: int = 333, **config) -> list:
    config.setdefault("speculate_ms", 0)
    seg = Segmenter(LoudIsSpeech(), VadConfig(**config))
    out = []
    for i in range(0, len(audio), block):  # odd block size: frames span blocks
        out += seg.push(audio[i : i + block])
    return out + seg.flush()


def test_two_utterances_with_timing_and_pre_roll():
    audio = signal(("q", 0.99), ("s", 0.6), ("q", 0.99), ("s", 0.9), ("q", 0.99))
    segments = run(audio, pre_roll_ms=300, hangover_ms=300)
    assert len(segments) == 2
    first, second = segments
    assert first.start_s == pytest.approx(0.99, abs=0.031)
    assert first.end_s == pytest.approx(1.59, abs=0.031)
    assert second.start_s == pytest.approx(2.58, abs=0.031)
    # Pre-roll: 300 ms of audio before the first speech frame; then speech; then the hangover.
    pre = int(0.3 * SAMPLE_RATE)
    assert np.abs(first.audio[:pre]).max() < 0.01
    assert np.abs(first.audio[pre : pre + FRAME]).mean() > 0.4
    assert len(first.audio) == pytest.approx((0.3 + 0.6 + 0.3) * SAMPLE_RATE, abs=2 * FRAME)


def test_short_pause_does_not_split_and_long_pause_does():
    assert len(run(signal(("q", 0.5), ("s", 0.6), ("q", 0.15), ("s", 0.6), ("q", 0.5)), hangover_ms=300)) == 1
    assert len(run(signal(("q", 0.5), ("s", 0.6), ("q", 0.45), ("s", 0.6), ("q", 0.5)), hangover_ms=300)) == 2


def test_short_utterance_is_dropped_and_counted():
    seg = Segmenter(LoudIsSpeech(), VadConfig(min_speech_ms=250, speculate_ms=0))
    out = seg.push(signal(("q", 0.5), ("s", 0.09), ("q", 0.6))) + seg.flush()
    assert out == []
    assert seg.stats.dropped_short == 1


def test_never_ending_speech_is_force_split():
    segments = run(signal(("s", 7.0)), max_utterance_s=3.0)
    assert [s.forced for s in segments] == [True, True, False]
    assert [round(s.speech_s) for s in segments] == [3, 3, 1]
    assert all(len(s.audio) <= 3.0 * SAMPLE_RATE + FRAME for s in segments)


def test_flush_returns_the_utterance_in_progress():
    seg = Segmenter(LoudIsSpeech(), VadConfig(speculate_ms=0))
    assert seg.push(signal(("q", 0.3), ("s", 0.5))) == []
    assert seg.in_speech
    (last,) = seg.flush()
    assert last.end_s == pytest.approx(0.8, abs=0.031)
    assert not seg.in_speech


def test_reset_forgets_everything():
    classifier = LoudIsSpeech()
    seg = Segmenter(classifier, VadConfig(speculate_ms=0))
    seg.push(signal(("q", 0.3), ("s", 0.5)))
    seg.reset()
    assert not seg.in_speech and seg.position == 0 and seg.stats.frames == 0
    assert classifier.resets == 2  # once at construction, once now
    (only,) = seg.push(signal(("s", 0.5), ("q", 0.5)))
    assert only.start_s == 0.0  # stream time restarted


def test_speculation_sends_a_tentative_copy_before_the_final():
    segments = run(signal(("q", 0.5), ("s", 0.8), ("q", 0.6)), hangover_ms=300, speculate_ms=120)
    assert [s.tentative for s in segments] == [True, False]
    tentative, final = segments
    assert tentative.same_speech(final)
    assert len(tentative.audio) < len(final.audio)


def test_skip_to_continues_after_a_gap():
    seg = Segmenter(LoudIsSpeech(), VadConfig(speculate_ms=0))
    seg.push(signal(("q", 0.3)))
    seg.skip_to(SAMPLE_RATE * 10)
    (s,) = seg.push(signal(("s", 0.5), ("q", 0.5)))
    assert s.start_s == pytest.approx(10.0)
    with pytest.raises(ValueError, match="skip back"):
        seg.skip_to(0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"frame_ms": 25}, "10, 20 or 30"),
        ({"backend": "energy"}, "webrtc, silero"),
        ({"threshold": 1.5}, "threshold"),
        ({"hangover_ms": -1}, "hangover_ms"),
        ({"max_utterance_s": 0.1}, "maximum utterance"),
    ],
)
def test_bad_config_is_one_sentence(change, message):
    with pytest.raises(LiveError, match=message):
        VadConfig(**change).validate()


def test_webrtc_accepts_its_frame_and_rejects_others():
    vad = WebrtcClassifier(aggressiveness=2, frame_ms=20)
    assert vad.frame_samples == 320
    assert vad.is_speech(np.zeros(320, dtype=np.float32)) is False
    with pytest.raises(ValueError, match="320 samples"):
        vad.is_speech(np.zeros(300, dtype=np.float32))
    with pytest.raises(ValueError, match="10, 20 or 30 ms"):
        WebrtcClassifier(frame_ms=15)


def test_silero_runs_without_torch_and_checks_chunks():
    vad = SileroClassifier()
    assert vad.probability(np.zeros(512, dtype=np.float32)) < 0.1
    with pytest.raises(ValueError, match="exactly 512 samples"):
        vad.probability(np.zeros(480, dtype=np.float32))
    vad.reset()
    assert not vad._state.any()


def test_trim_to_speech_cuts_a_clip_as_the_live_segmenter_does(speech):
    from memocmt.live.vad import apply_trim, trim_to_speech

    quiet = np.zeros(SAMPLE_RATE, dtype=np.float32)
    clip = np.concatenate([quiet, speech, quiet])
    trimmed = trim_to_speech(clip)
    assert len(speech) * 0.5 < len(trimmed) < len(clip) - SAMPLE_RATE  # most of the silence is gone
    offset = next(i for i in range(len(clip)) if np.array_equal(clip[i : i + 64], trimmed[:64]))
    assert np.array_equal(clip[offset : offset + len(trimmed)], trimmed)  # one contiguous piece, untouched
    assert 0.3 * SAMPLE_RATE < offset < SAMPLE_RATE + len(speech) // 2  # the silence before the speech is cut
    config = VadConfig(speculate_ms=0)  # the live default, which the training cut follows
    seg = Segmenter(make_classifier(config), config)
    live = [s for s in seg.push(clip) + seg.flush()]
    assert len(live) == 1 and len(live[0].audio) - len(trimmed) >= 0.25 * SAMPLE_RATE  # live keeps the hangover for ASR
    # ... and the emotion model hears the same cut as training: pre-roll to the end of speech
    assert abs(len(live[0].speech_audio) - len(trimmed)) <= 0.03 * SAMPLE_RATE
    tentative, final = (s for s in Segmenter(make_classifier(VadConfig()), VadConfig()).push(clip))
    assert tentative.tentative and np.array_equal(tentative.speech_audio, final.speech_audio)
    assert np.array_equal(trim_to_speech(quiet), quiet)  # nothing to cut to: unchanged
    assert np.array_equal(clip[offset + len(trimmed) - 480: offset + len(trimmed)], trimmed[-480:])
    assert apply_trim(clip, "none") is clip and np.array_equal(apply_trim(clip, "vad"), trimmed)
    with pytest.raises(ValueError, match="trim"):
        apply_trim(clip, "silence")


def test_trim_within_keeps_the_utterance_and_drops_noise_speech_beside_it(speech):
    from memocmt.live.vad import apply_trim, trim_to_speech

    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([speech[::-1], gap, speech])  # the reversed speech stands for babble in the context
    own = (len(speech) + len(gap), len(audio))
    cut = trim_to_speech(audio, within=own)
    offset = next(i for i in range(len(audio)) if np.array_equal(audio[i : i + 256], cut[:256]))
    assert offset >= len(speech)  # nothing of the other talker
    assert abs(len(cut) - len(trim_to_speech(speech))) <= 0.03 * SAMPLE_RATE  # the cut the clip gets alone
    assert len(trim_to_speech(audio)) > len(speech) + len(gap)  # without `within`, both are taken
    assert np.array_equal(apply_trim(audio, "none", own), audio[own[0]:])  # no cut: the clip's own span
    assert np.array_equal(trim_to_speech(np.zeros(SAMPLE_RATE, np.float32), within=(100, 200)), np.zeros(100))
