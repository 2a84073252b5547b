import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from memocmt.manifest import (
    Manifest,
    ManifestError,
    TO_FOUR_CLASSES,
    Utterance,
    map_labels,
    read_manifest,
    validate_manifest,
    write_manifest,
)


def _wav(path: Path, seconds: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), 16000, subtype="PCM_16")
    return path


def _utt(tmp_path, i, label="happy", speaker="s1", split="train", **kw):
    return Utterance(audio=_wav(tmp_path / "audio" / f"{i}.wav"), text=f"text {i}", label=label,
                     speaker=speaker, split=split, id=f"u{i}", corpus="toy", **kw)


def _three_split(tmp_path):
    return Manifest.from_items([
        _utt(tmp_path, 0, "happy", "a", "train"),
        _utt(tmp_path, 1, "sad", "a", "train"),
        _utt(tmp_path, 2, "angry", "b", "val"),
        _utt(tmp_path, 3, "neutral", "c", "test"),
    ])


def test_round_trip_relative_paths_and_extras(tmp_path):
    m = _three_split(tmp_path)
    m = Manifest.from_items([*m.items[:3], Utterance(**{**m.items[3].__dict__, "extra": {"voice": "en+m3"}})])
    out = write_manifest(tmp_path / "sub" / "m.jsonl", m)
    first = json.loads(out.read_text().splitlines()[0])
    assert first["audio"] == "../audio/0.wav"  # relative to the manifest's directory
    back = read_manifest(out)
    assert back.items == m.items
    assert back.items[3].extra == {"voice": "en+m3"}
    assert back.labels == ("neutral", "happy", "sad", "angry")
    assert back.items[2].line == 3


def test_split_targets_and_summary(tmp_path):
    m = _three_split(tmp_path)
    train = m.split("train")
    assert len(train) == 2 and train.labels == m.labels
    assert train.targets() == [1, 2]
    assert "train" in m.summary() and "total" in m.summary()
    with pytest.raises(ManifestError, match="Unknown split"):
        m.split("dev")


def test_json_error_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = {"audio": "a.wav", "text": "", "label": "sad", "speaker": "x", "split": "train"}
    p.write_text(json.dumps(good) + "\n\n{not json}\n")
    with pytest.raises(ManifestError, match=r"bad\.jsonl:3: invalid JSON"):
        read_manifest(p)
    p.write_text(json.dumps({**good, "split": "dev"}) + "\n")
    with pytest.raises(ManifestError, match=r":1: split 'dev'"):
        read_manifest(p)
    p.write_text(json.dumps({"audio": "a.wav"}) + "\n")
    with pytest.raises(ManifestError, match="missing required field"):
        read_manifest(p)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")


def test_map_labels_drops_and_rejects_unknown(tmp_path):
    m = Manifest.from_items([_utt(tmp_path, 0, "calm", "a"), _utt(tmp_path, 1, "angry", "a"), _utt(tmp_path, 2, "fearful", "a")])
    four = map_labels(m, TO_FOUR_CLASSES, labels=("neutral", "happy", "sad", "angry"))
    assert [u.label for u in four] == ["angry"]
    assert four.labels == ("neutral", "happy", "sad", "angry")
    with pytest.raises(ManifestError, match=r"\['calm', 'fearful'\] have no entry"):
        map_labels(m, {"angry": "angry"})


def test_validate_ok_and_missing_file_reports_row(tmp_path):
    m = _three_split(tmp_path)
    assert validate_manifest(m).skipped == 0
    write_manifest(tmp_path / "m.jsonl", m)
    (tmp_path / "audio" / "1.wav").unlink()
    (tmp_path / "audio" / "2.wav").write_bytes(b"garbage, not audio")
    m = read_manifest(tmp_path / "m.jsonl")
    with pytest.raises(ManifestError, match=r"2 bad row\(s\): row 2: .*1\.wav: audio file not found; row 3: .*2\.wav"):
        validate_manifest(m)
    with pytest.raises(ManifestError, match="no utterances in split"):  # val is empty once row 3 is skipped
        validate_manifest(m, on_error="skip")
    result = validate_manifest(m, on_error="skip", required_splits=("train", "test"))
    assert result.skipped == 2 and [p.row for p in result.problems] == [2, 3]
    assert len(result.manifest) == 2
    assert validate_manifest(m, check_files=False).skipped == 0


def test_validate_labels_duplicates_and_speaker_leakage(tmp_path):
    items = list(_three_split(tmp_path).items)
    items.append(_utt(tmp_path, 4, "calm", "b", "train"))
    items.append(Utterance(**{**items[0].__dict__, "split": "val"}))  # duplicate id u0
    m = Manifest.from_items(items)
    result = validate_manifest(m, labels=("neutral", "happy", "sad", "angry"), on_error="skip")
    reasons = [p.reason for p in result.problems]
    assert any("label 'calm'" in r for r in reasons) and any("already used on row 1" in r for r in reasons)
    leaky = Manifest.from_items(items[:4] + [_utt(tmp_path, 5, "sad", "c", "train")])
    with pytest.raises(ManifestError, match=r"1 speaker\(s\) in both train and test \(toy/c\)"):
        validate_manifest(leaky)
    assert len(validate_manifest(leaky, allow_speaker_overlap=True).manifest) == 5


def test_manifest_rejects_labels_outside_its_list(tmp_path):
    with pytest.raises(ManifestError, match="missing from the label list"):
        Manifest((_utt(tmp_path, 0, "happy"),), ("sad",))
