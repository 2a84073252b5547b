import shutil
from collections import Counter

import pytest
import soundfile as sf

from memocmt.audio import SAMPLE_RATE, check_audio, load_audio
from memocmt.manifest import FOUR_CLASSES, read_manifest, validate_manifest
from memocmt.synthetic import SENTENCES, VOICES, generate_synthetic_corpus, plan_corpus, require_tools

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng and sox are not installed"
)


def test_sentences_are_many_and_distinct():
    for emotion in FOUR_CLASSES:
        assert len(set(SENTENCES[emotion])) >= 25 and len(set(SENTENCES[emotion])) == len(SENTENCES[emotion])
    assert not set(SENTENCES["angry"]) & set(SENTENCES["happy"])


def test_plan_is_deterministic_and_split_by_voice_and_sentence():
    a, b, c = plan_corpus(40, seed=0), plan_corpus(40, seed=0), plan_corpus(40, seed=1)
    assert a == b and a != c
    assert Counter(i.label for i in a) == {label: 40 for label in FOUR_CLASSES}
    by_split = {s: [i for i in a if i.split == s] for s in ("train", "val", "test")}
    voices = {s: {i.voice for i in items} for s, items in by_split.items()}
    texts = {s: {i.text for i in items} for s, items in by_split.items()}
    for x, y in (("train", "test"), ("train", "val"), ("val", "test")):
        assert not voices[x] & voices[y] and not texts[x] & texts[y]
    assert set().union(*voices.values()) <= set(VOICES)
    for item in a:  # the label rule: at most one channel is emotional, and it gives the label
        assert "neutral" in (item.text_emotion, item.voice_emotion) or item.text_emotion == item.voice_emotion
        assert item.label == (item.voice_emotion if item.text_emotion == "neutral" else item.text_emotion)
    kinds = Counter(i.kind for i in a)
    assert kinds["text-led"] == kinds["voice-led"] == 3 * 4  # 20% of 40 per emotional class, half each
    assert all(i.text in SENTENCES["neutral"] for i in a if i.kind == "voice-led")
    angry = [i.prosody for i in a if i.voice_emotion == "angry"]
    sad = [i.prosody for i in a if i.voice_emotion == "sad"]
    assert min(p.rate_wpm for p in angry) > max(p.rate_wpm for p in sad)


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_per_class"):
        plan_corpus(0)
    with pytest.raises(ValueError, match="At least 3 voices"):
        plan_corpus(5, voices=("en-us",))


@needs_tools
def test_tiny_corpus_is_valid_audio_with_a_manifest(tmp_path):
    require_tools()
    m = generate_synthetic_corpus(tmp_path / "synth", n_per_class=3, seed=0)
    assert len(m) == 12 and m.labels == FOUR_CLASSES
    back = read_manifest(tmp_path / "synth" / "manifest.jsonl")
    assert back.items == m.items
    assert {u.corpus for u in back} == {"synthetic"} and {u.text_source for u in back} == {"synthetic"}
    assert "SYNTHETIC" in (tmp_path / "synth" / "README.md").read_text()
    result = validate_manifest(back, decode=True)  # every split present, no voice in train and test
    assert result.skipped == 0
    for u in back:
        info = sf.info(str(u.audio))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        audio = check_audio(load_audio(u.audio))
        assert 0.5 < audio.size / SAMPLE_RATE < 8 and 0.01 < audio.std() < 0.5
    again = generate_synthetic_corpus(tmp_path / "again", n_per_class=3, seed=0)
    assert [u.text for u in again] == [u.text for u in m]
    assert sf.read(again.items[0].audio)[0].tolist() == sf.read(m.items[0].audio)[0].tolist()
