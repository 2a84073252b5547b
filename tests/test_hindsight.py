"""Hindsight (memocmt.live.hindsight): a voice's first utterances classified again once it is well known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from memocmt.live.hindsight import Hindsight, Kept, Revision
from memocmt.live.pipeline import BundleEmotionModel
from memocmt.live.summary import SummaryBuilder, UtteranceResult
from memocmt.results import Prediction


@dataclass
class _Encoding:
    states: np.ndarray  # (B, L, T, D)
    lengths: np.ndarray


class _LevelBundle:
    """A speaker-normalised stand-in: an utterance is "loud" when its level is above its speaker's mean level."""

    labels = ["quiet", "loud"]
    speaker_norm = "mean+std"
    uses_audio, uses_text = True, False
    voices = None
    speaker_prior = np.zeros((2, 1, 1), np.float32)  # mean 0, variance 0: one utterance's weight

    def encode_audio(self, audio):
        return _Encoding(np.full((1, 1, 4, 1), float(audio.mean()), np.float32), np.array([4]))

    def audio_stats(self, encoding):
        level = np.asarray(encoding.states, np.float32)[:, :, 0].mean(axis=-1)  # (B, L)
        return np.stack([level, np.zeros_like(level)], axis=1)[..., None]  # (B, 2, L, 1)

    def encode_text(self, text):
        raise AssertionError("this model reads no text")

    def classify(self, audio, text, stats, language=None):
        z = float(np.asarray(audio.states, np.float32).mean()) - float(stats[0, 0].mean())
        p = 1.0 / (1.0 + np.exp(-4.0 * z))
        return Prediction.from_probabilities(self.labels, [1.0 - p, p])


def test_hindsight_holds_a_young_voice_and_hands_it_back_when_its_window_is_full():
    h = Hindsight(window=3, max_kept=10)
    shown = Prediction.from_probabilities(["a", "b"], [0.6, 0.4])
    for heard, index in ((1, 1), (2, 2)):
        h.keep("S1", heard, Kept(index, None, None, None, shown))
    h.keep("S2", 1, Kept(3, None, None, None, shown))
    assert h.due("S1", 2) == [] and len(h) == 3
    h.keep("S1", 3, Kept(4, None, None, None, shown))  # the third is classified with a full window: not held
    assert [k.index for k in h.due("S1", 3)] == [1, 2] and len(h) == 1
    assert {v: [k.index for k in items] for v, items in h.remaining().items()} == {"S2": [3]} and len(h) == 0

    small = Hindsight(window=20, max_kept=2)
    for i in range(1, 5):
        small.keep(None, i, Kept(i, None, None, None, shown))
    assert [k.index for k in small.remaining()[None]] == [3, 4] and small.given_up == 2
    with pytest.raises(ValueError, match="window"):
        Hindsight(window=0)


def test_first_utterances_are_revised_with_the_voice_statistics_once_known():
    model = BundleEmotionModel(_LevelBundle(), "level", adapt_window=4, track_speakers=False)
    levels = [1.0, 2.0, 3.0, 4.0, 5.0]
    shown, revisions = [], []
    for index, level in enumerate(levels, 1):
        audio = np.full(1600, level, np.float32)
        shown.append(model.predict(audio, "", model.encode_audio(audio)))
        revisions.append(model.settle(index))
    # the first utterance is "loud" against the prior alone; against its speaker's first four it is quiet
    assert shown[0].label == "loud"
    assert revisions[:3] == [[], [], []] and [r.index for r in revisions[3]] == [1, 2, 3]
    first = revisions[3][0]
    assert isinstance(first, Revision) and first.changed and first.prediction.label == "quiet"
    assert first.previous is shown[0] and first.to_dict()["previous_label"] == "loud"
    assert revisions[4] == [] and model.settle_all() == []  # the window was full from the fourth on

    young = BundleEmotionModel(_LevelBundle(), "level", adapt_window=20, track_speakers=False)
    for index, level in enumerate((1.0, 5.0), 1):
        audio = np.full(1600, level, np.float32)
        young.predict(audio, "", young.encode_audio(audio))
        assert young.settle(index) == []
    final = young.settle_all()  # the session ends before the window fills
    assert [r.index for r in final] == [1, 2] and final[0].prediction.label == "quiet"
    assert final[1].prediction.probabilities == pytest.approx(final[1].previous.probabilities, abs=1e-3)

    off = BundleEmotionModel(_LevelBundle(), "level", adapt_window=4, track_speakers=False, hindsight=False)
    off.predict(np.ones(1600, np.float32), "")
    assert off.settle(1) == [] and off.settle_all() == []


def test_the_summary_counts_revised_labels():
    builder = SummaryBuilder()
    first = Prediction.from_probabilities(["sad", "happy"], [0.3, 0.7])
    first.speaker = 0
    builder.add(UtteranceResult(1, 0.0, 1.0, "hi", first, {}))
    second = Prediction.from_probabilities(["sad", "happy"], [0.8, 0.2])
    second.speaker = 0
    builder.add(UtteranceResult(2, 1.0, 2.0, "oh", second, {}))
    later = Prediction.from_probabilities(["sad", "happy"], [0.9, 0.1])
    later.speaker = 0
    builder.revise([Revision(1, later, first), Revision(2, second, second)])
    summary = builder.build(audio_s=2.0, overflows=0, dropped_audio_s=0.0, dropped_utterances=0, short_dropped=0,
                            no_speech=0, forced_splits=0, peak_lag_s=0.0, reopens=0, end_reason="end of input")
    assert summary.emotions == {"sad": 2} and summary.speakers == {0: {"sad": 2}} and summary.revised == 1
    assert "1 revised in hindsight" in "\n".join(summary.lines())
