"""Short-context Whisper on several utterances at once (Transcriber.transcribe_batch), as memocmt-serve runs it:
the shipped Whisper base decoder on the shipped emotion bundle's encoder pass, through the server's audio batcher."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from memocmt.audio import SAMPLE_RATE

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

# Different lengths (3.4, 1.6, 5.0 and 3.3 s with espeak-ng), each transcribed cleanly alone.
SENTENCES = [
    "Good morning, I am very happy to see you today.",
    "Why did you do that?",
    "Tomorrow we will walk along the river together, if the weather stays this nice.",
    "The meeting has been moved to Thursday afternoon.",
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.fixture(scope="module")
def engine():
    from memocmt.serve.cli import ModelOptions
    from tests.serve_helpers import load_real_engine

    engine = load_real_engine(ModelOptions(language="en"))  # a known language: short context
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def transcriber(engine):
    transcriber = engine.transcriber("short")
    if transcriber.context != "short":
        pytest.skip("the emotion bundle's encoder is not this Whisper's; no short context to batch")
    return transcriber


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    from tests.pulse import espeak

    return [espeak(s) for s in SENTENCES]


@pytest.fixture(scope="module")
def alone(transcriber, speech):
    return [transcriber.transcribe(audio) for audio in speech]


def test_only_short_context_in_a_known_language_decodes_a_batch_together(engine, transcriber):
    assert transcriber.batchable() and transcriber.batchable("en") and not transcriber.batchable("auto")
    assert not engine.transcriber("full").batchable("en")  # the server then runs its utterances one at a time


def test_a_batch_gives_each_utterance_the_words_it_gets_alone(transcriber, speech, alone):
    retries, fallbacks = transcriber.retries, transcriber.fallbacks
    batched = transcriber.transcribe_batch(speech)
    assert [t.context for t in batched] == ["short"] * len(speech)
    assert (transcriber.retries, transcriber.fallbacks) == (retries, fallbacks)
    for one, together, sentence in zip(alone, batched, SENTENCES):
        assert len(set(words(one.text)) & set(words(sentence))) >= len(words(sentence)) - 2, one.text
        # The shorter ones are decoded with more trailing silence than alone, which may change the case or
        # punctuation Whisper writes ("why did you do that?"): compare the words.
        assert words(together.text) == words(one.text)
        assert together.language == one.language == "en"
        # the score covers the whole decoding, also what Whisper says in the (longer) silence after the speech
        assert together.avg_logprob == pytest.approx(one.avg_logprob, abs=0.2)
    longest = int(np.argmax([a.size for a in speech]))
    assert batched[longest].text == alone[longest].text  # its states are the ones it gets alone


def test_a_batch_of_one_is_transcribe(transcriber, speech, alone, monkeypatch):
    seen = []
    encoder = transcriber._encoder
    monkeypatch.setattr(transcriber, "_encoder", lambda audio: seen.append(audio.size) or encoder(audio))
    for audio, one in zip(speech[:2], alone):
        (batched,) = transcriber.transcribe_batch([audio])
        assert {**vars(batched), "asr_ms": 0, "encoder_ms": 0} == {**vars(one), "asr_ms": 0, "encoder_ms": 0}
    pad = int(transcriber.config.context_pad_s * SAMPLE_RATE)
    assert seen == [speech[0].size + pad, speech[1].size + pad]  # its own length and the pad, nothing more


class _FailingRows:
    """The CTranslate2 Whisper model, but the outputs of chosen rows of the first decoding with a given
    no_repeat_ngram_size replaced: a runaway (more tokens than any budget) or a loop."""

    def __init__(self, model, fail: dict[int, dict[int, str]]):
        self._model, self._fail, self.calls = model, fail, []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, states, prompts, **kwargs):
        results = self._model.generate(states, prompts, **kwargs)
        self.calls.append((len(prompts), kwargs["no_repeat_ngram_size"]))
        for row, how in self._fail.pop(kwargs["no_repeat_ngram_size"], {}).items():  # once: not the 30 s decoding
            tokens = list(range(1000, 1200)) if how == "runaway" else [1000, 1001, 1002] * 4
            results[row] = SimpleNamespace(sequences_ids=[tokens], scores=[-0.2], no_speech_prob=0.01)
        return results


def test_an_utterance_that_runs_away_or_loops_is_retried_and_falls_back_alone(transcriber, speech, alone,
                                                                             monkeypatch):
    # first decoding: utterance 1 runs away, utterance 2 loops; their retry (rows 0 and 1): utterance 2 loops again
    model = _FailingRows(transcriber._model.model, {0: {1: "runaway", 2: "loop"}, 3: {1: "loop"}})
    monkeypatch.setattr(transcriber._model, "model", model)
    retries, fallbacks = transcriber.retries, transcriber.fallbacks
    batched = transcriber.transcribe_batch(speech)
    assert model.calls[:2] == [(4, 0), (2, 3)]  # one decoding of all four, one retry of the two that failed
    assert transcriber.retries - retries == 2 and transcriber.fallbacks - fallbacks == 1
    assert [t.context for t in batched] == ["short", "short", "full", "short"]
    for i in (0, 3):
        assert words(batched[i].text) == words(alone[i].text)
    for i in (1, 2):  # the retried one and the one transcribed with the 30 s window still hold their sentence
        assert len(set(words(batched[i].text)) & set(words(SENTENCES[i]))) >= len(words(SENTENCES[i])) - 2, \
            batched[i].text
