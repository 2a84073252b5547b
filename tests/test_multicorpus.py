"""Several corpora in one manifest: the nEMO adapter, a user's CSV/TSV table, the language field and
`memocmt-prepare merge` with its refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from memocmt.corpora import CorpusError, build_corpus, build_nemo, build_table
from memocmt.manifest import Manifest, ManifestError, Utterance, merge_manifests, read_manifest, write_manifest
from memocmt.prepare import cli as prepare_cli
from tests.test_corpora import _put, _ravdess, wav_bytes  # noqa: F401  (fixture)

REAL_NEMO = Path(os.environ.get("MEMOCMT_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "nemo-pl"
NEMO_SPEAKERS = ("EB0", "IC0", "KD0", "KS0", "MP0")
NEMO_EMOTIONS = ("neutral", "happiness", "sadness", "anger", "fear")
HEADER = "file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n"


def _nemo(root: Path, data: bytes) -> Path:
    """A tiny nEMO layout: 5 actors x 5 emotions (fear is dropped) x 2 sentences."""
    rows = []
    for speaker in NEMO_SPEAKERS:
        for emotion in NEMO_EMOTIONS:
            for sentence in (1, 2):
                name = f"{speaker}_{emotion}_{sentence}.flac"
                _put(root / "samples" / name, data)
                rows.append(f"{name}\t{emotion}\tZdanie {sentence}.\tzdanie {sentence}\t{speaker}\tfemale\t30\n")
    (root / "data.tsv").write_text(HEADER + "".join(rows), encoding="utf-8")
    return root


def test_nemo_maps_four_emotions_and_splits_by_speaker(tmp_path, wav_bytes):
    root = _nemo(tmp_path / "nemo", wav_bytes)
    m = build_nemo(root, test_speakers=["KD0"], val_speakers=["IC0"])
    assert m.labels == ("neutral", "happy", "sad", "angry") and len(m) == 5 * 4 * 2
    assert {u.speaker for u in m.split("test")} == {"KD0"} and {u.speaker for u in m.split("val")} == {"IC0"}
    u = next(u for u in m if u.id == "EB0_happiness_2")
    assert (u.label, u.text, u.corpus, u.language, u.text_source) == ("happy", "Zdanie 2.", "nemo", "pl", "corpus")
    assert u.extra == {"gender": "female", "age": "30"}
    # written and read back, the language survives; an old manifest without it reads as ""
    path = write_manifest(tmp_path / "nemo.jsonl", m)
    assert read_manifest(path).items[0].language == "pl"
    assert json.loads(path.read_text().splitlines()[0])["language"] == "pl"
    seeded = build_corpus("nemo", root, seed=3)
    assert len({u.speaker for u in seeded.split("test")}) == 1  # 20% of 5 actors
    with pytest.raises(CorpusError, match="not in the corpus"):
        build_nemo(root, test_speakers=["XX9"])


def test_nemo_refuses_a_table_that_is_not_nemo(tmp_path, wav_bytes):
    root = _nemo(tmp_path / "nemo", wav_bytes)
    with pytest.raises(CorpusError, match="No nEMO table"):
        build_nemo(tmp_path)
    (root / "data.tsv").write_text("file\tlabel\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no column"):
        build_nemo(root)
    (root / "data.tsv").write_text(HEADER + "a.flac\tjoy\tx\tx\tEB0\tf\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="unknown emotion 'joy'"):
        build_nemo(root)


def test_real_nemo_clips(tmp_path):
    if not (REAL_NEMO / "data.tsv").is_file():
        pytest.skip(f"nEMO not found at {REAL_NEMO}")
    m = build_nemo(REAL_NEMO, test_speakers=["KD0", "SM0"], val_speakers=["IC0", "TP0"])
    assert len(m) == 3076 and len({u.speaker for u in m}) == 9
    assert {u.speaker for u in m.split("test")} == {"KD0", "SM0"}
    from memocmt.audio import load_audio

    clip = next(u for u in m if u.speaker == "KD0" and u.label == "angry")
    audio = load_audio(clip.audio)
    assert 0.5 < audio.size / 16000 < 15 and 0 < float(audio.std()) < 1  # a real, scaled utterance
    assert clip.text and clip.language == "pl"


def test_table_corpus_with_named_columns(tmp_path, wav_bytes):
    for speaker in ("s1", "s2", "s3", "s4"):
        for label in ("Happiness", "neutral", "fear"):
            _put(tmp_path / "clips" / f"{speaker}_{label}.wav", wav_bytes)
    rows = [f"clips/{s}_{lab}.wav,{lab},{s},hallo {s}" for s in ("s1", "s2", "s3", "s4") for lab in ("Happiness", "neutral", "fear")]
    table = tmp_path / "mine.csv"
    table.write_text("path,emotion,who,words\n" + "\n".join(rows) + "\n", encoding="utf-8")
    m = build_table(table, audio_col="path", label_col="emotion", speaker_col="who", text_col="words", language="de",
                    label_map="happiness=happy,fear=", test_speakers=["s4"], val_speakers=["s3"])
    assert m.labels == ("neutral", "happy") and len(m) == 8
    assert {u.corpus for u in m} == {"mine"} and {u.language for u in m} == {"de"}
    assert {u.speaker for u in m.split("test")} == {"s4"}
    assert next(u for u in m if u.id == "mine/clips/s1_Happiness").text == "hallo s1"
    with pytest.raises(CorpusError, match="no column.*speaker"):
        build_table(table, audio_col="path", label_col="emotion")
    out = tmp_path / "mine.jsonl"
    assert prepare_cli(["table", str(table), "--out", str(out), "--audio-col", "path", "--label-col", "emotion",
                        "--speaker-col", "who", "--language", "de", "--label-map", "happiness=happy,fear=",
                        "--test-speakers", "s4", "--val-speakers", "s3"]) == 0
    assert {u.language for u in read_manifest(out)} == {"de"} and len(read_manifest(out)) == 8


def _one(corpus: str, id_: str, label: str = "angry", speaker: str = "A") -> Utterance:
    return Utterance(audio=Path(f"/x/{id_}.wav"), text="", label=label, speaker=speaker, split="train", corpus=corpus, id=id_)


def test_merge_keeps_corpora_and_refuses_collisions_and_other_class_sets(tmp_path):
    a = Manifest.from_items([_one("ravdess", "r1"), _one("ravdess", "r2", "sad")], ("neutral", "happy", "sad", "angry"))
    b = Manifest.from_items([_one("nemo", "n1"), _one("nemo", "n2", "neutral")], ("neutral", "happy", "sad", "angry"))
    merged = merge_manifests([a, b], ["a", "b"])
    assert [u.corpus for u in merged] == ["ravdess", "ravdess", "nemo", "nemo"]
    assert len(merged.speakers()) == 2  # speaker "A" of two corpora: two people
    with pytest.raises(ManifestError, match="'r1' is in both a and c"):
        merge_manifests([a, Manifest.from_items([_one("other", "r1")], a.labels)], ["a", "c"])
    with pytest.raises(ManifestError, match="map both onto one class set"):
        merge_manifests([a, Manifest.from_items([_one("x", "x1", "calm")])], ["a", "x"])
    no_corpus = write_manifest(tmp_path / "mine.jsonl", Manifest.from_items(
        [_one("", f"m{i}", label) for i, label in enumerate(a.labels)], a.labels))
    assert {u.corpus for u in merge_manifests([a, read_manifest(no_corpus)])} == {"ravdess", "mine"}


def test_prepare_merge_command(tmp_path, wav_bytes, capsys):
    ravdess = _ravdess(tmp_path / "RAVDESS", wav_bytes, actors=range(1, 6))
    nemo = _nemo(tmp_path / "nemo", wav_bytes)
    r, n, out = tmp_path / "r.jsonl", tmp_path / "n.jsonl", tmp_path / "both.jsonl"
    assert prepare_cli(["ravdess", str(ravdess), "--out", str(r), "--test-speakers", "5", "--val-speakers", "4"]) == 0
    assert prepare_cli(["nemo", str(nemo), "--out", str(n), "--test-speakers", "KD0", "--val-speakers", "IC0"]) == 0
    assert prepare_cli(["merge", str(r), str(n), "--out", str(out)]) == 0
    merged = read_manifest(out)
    assert {(u.corpus, u.language) for u in merged} == {("ravdess", "en"), ("nemo", "pl")}
    assert {u.speaker for u in merged.split("test")} == {"Actor_05", "KD0"}
    capsys.readouterr()
    assert prepare_cli(["merge", str(r), str(r), "--out", str(tmp_path / "twice.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ids must be unique" in err
    eight = tmp_path / "r8.jsonl"
    assert prepare_cli(["ravdess", str(ravdess), "--out", str(eight), "--classes", "8", "--test-speakers", "5"]) == 0
    capsys.readouterr()
    assert prepare_cli(["merge", str(eight), str(n), "--out", str(tmp_path / "bad.jsonl")]) == 2
    assert "map both onto one class set" in capsys.readouterr().err


def test_balanced_sampling_draws_corpora_and_classes_evenly():
    pytest.importorskip("torch")
    from collections import Counter

    from memocmt.embed_cache import EmbeddedSplit
    from memocmt.train import CachedDataset, TrainConfig, epoch_sampler

    # corpus "big": 80 utterances (60 of class 0), corpus "small": 20 (5 of class 0); 3 speakers each
    targets = [0] * 60 + [1] * 20 + [0] * 5 + [1] * 15
    speakers = [("big", f"b{i % 3}") for i in range(80)] + [("small", f"s{i % 3}") for i in range(20)]
    split = EmbeddedSplit([None] * 100, [None] * 100, targets, [f"u{i}" for i in range(100)], [], speakers)
    data = CachedDataset(split)
    draws = [i for epoch in range(1, 41) for i in epoch_sampler(data, 0, epoch, "corpus+class")]
    assert len(draws) == 40 * 100
    shares = Counter((speakers[i][0], targets[i]) for i in draws)
    assert all(abs(n / len(draws) - 0.25) < 0.03 for n in shares.values()) and len(shares) == 4
    by_corpus = Counter(speakers[i][0] for i in epoch_sampler(data, 0, 1, "corpus") for _ in [0])
    assert abs(by_corpus["small"] - 50) < 20
    assert epoch_sampler(data, 0, 3, "corpus+class") == epoch_sampler(data, 0, 3, "corpus+class")  # fixed by (seed, epoch)
    assert sorted(epoch_sampler(data, 0, 1)) == list(range(100))  # off: every utterance once, as before
    with pytest.raises(ValueError, match="balance 'speaker' is not one of"):
        TrainConfig(manifests=["m.jsonl"], balance="speaker").validate()


def test_epoch_size_bounds_the_draws_of_an_epoch():
    pytest.importorskip("torch")
    from collections import Counter

    from memocmt.trainer.embed_cache import EmbeddedSplit
    from memocmt.trainer.train import CachedDataset, TrainConfig, epoch_sampler

    targets = [0] * 60 + [1] * 20 + [0] * 5 + [1] * 15
    speakers = [("big", f"b{i % 3}") for i in range(80)] + [("small", f"s{i % 3}") for i in range(20)]
    split = EmbeddedSplit([None] * 100, [None] * 100, targets, [f"u{i}" for i in range(100)], [], speakers)
    data = CachedDataset(split)
    draws = [epoch_sampler(data, 0, epoch, "corpus+class", 30) for epoch in range(1, 41)]
    assert all(len(d) == 30 for d in draws) and draws[0] != draws[1]
    shares = Counter((speakers[i][0], targets[i]) for d in draws for i in d)
    assert len(shares) == 4 and all(abs(n / 1200 - 0.25) < 0.04 for n in shares.values())  # still balanced
    assert epoch_sampler(data, 0, 7, "corpus+class", 30) == draws[6]  # fixed by (seed, epoch)
    subset = epoch_sampler(data, 0, 1, "", 30)  # no balance: a random subset, no utterance twice
    assert len(subset) == 30 == len(set(subset))
    passes = Counter(epoch_sampler(data, 0, 1, "", 250))  # larger than the split: whole passes, then a subset
    assert len(passes) == 100 and set(passes.values()) == {2, 3} and sum(passes.values()) == 250
    assert TrainConfig(manifests=["m.jsonl"], epoch_size=500).validate().epoch_size == 500
    with pytest.raises(ValueError, match="epoch_size -1 must be 0"):
        TrainConfig(manifests=["m.jsonl"], epoch_size=-1).validate()
