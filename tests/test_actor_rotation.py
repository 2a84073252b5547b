"""The test-rotation recipe on a tiny RAVDESS-layout corpus: every group of four actors is the test set
once, for the fusion head and the audio-only ablation, with nothing of a group in its own training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memocmt.manifest import read_manifest
from tests.scripts import load_script, skip_without_recipe_tools
from tests.test_corpora import _ravdess, wav_bytes  # noqa: F401  (fixture)


def load_rotation():
    return load_script("training/recipes/actor_rotation.py", "actor_rotation_recipe")


def test_late_fusion_multiplies_the_heads_probabilities():
    rotation = load_rotation()
    labels = ["neutral", "angry"]

    def scores(probabilities, targets=("neutral", "angry", "angry")):
        one = {"ua": 0.0, "n": len(targets), "labels": labels, "targets": list(targets), "probabilities": probabilities}
        return {"01-04": {"ravdess": one, "synthetic": one}}

    # fusion is sure of row 0 and unsure of rows 1-2; audio-only leans the other way on row 0 and to angry on 1-2
    fusion = scores([[0.9, 0.1], [0.55, 0.45], [0.45, 0.55]])
    audio = scores([[0.4, 0.6], [0.3, 0.7], [0.45, 0.55]])
    combined = rotation.late_fusion(fusion, audio)["01-04"]["ravdess"]
    expected = np.array([[0.36, 0.06], [0.165, 0.315], [0.2025, 0.3025]])
    np.testing.assert_allclose(combined["probabilities"], expected / expected.sum(axis=1, keepdims=True))
    assert combined["ua"] == pytest.approx(1.0) and combined["wa"] == pytest.approx(1.0)  # neutral, angry, angry: all right
    assert rotation.ua_of(["neutral", "angry", "angry"], np.array(fusion["01-04"]["ravdess"]["probabilities"]), labels) \
        == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(RuntimeError, match="different ravdess utterances"):
        rotation.late_fusion(fusion, scores(audio["01-04"]["ravdess"]["probabilities"], ("angry", "angry", "angry")))


def test_rotation_needs_a_finished_recipe_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_rotation().main(["--work", str(tmp_path / "nothing"), "--ravdess", str(tmp_path)])
    assert exit_.value.code == 2
    assert "run training/recipes/default_model.py" in capsys.readouterr().err


def test_every_actor_group_is_tested_once_by_both_heads(tmp_path, wav_bytes):
    skip_without_recipe_tools()
    from memocmt.synthetic import generate_synthetic_corpus

    ravdess = _ravdess(tmp_path / "RAVDESS", wav_bytes, actors=range(1, 21))
    work = tmp_path / "work"
    generate_synthetic_corpus(work / "data" / "synthetic", n_per_class=3, seed=0)
    rotation = load_rotation()
    assert rotation.main(["--work", str(work), "--ravdess", str(ravdess), "--set", "epochs=1",
                          "--set", f"cache_dir={tmp_path / 'cache'}"]) == 0
    result = json.loads((work / "rotation" / "rotation.json").read_text())
    assert result["epochs"] == 1 and result["epochs_from"] == "the config's schedule"  # no cv.json in this work folder
    groups = ["01-04", "05-08", "09-12", "13-16", "17-20"]
    assert list(result["heads"]) == ["fusion", "audio-only", "fusion x audio-only"] and result["reused_runs"] == 0
    for head, row in result["heads"].items():
        assert list(row["groups"]) == groups
        assert all(g["n"] == 4 * 4 * 2 for g in row["groups"].values())  # 4 actors x 4 emotions x 2 statements
        assert row["pooled_n"] == 20 * 4 * 2
        assert row["mean_ua"] == pytest.approx(np.mean([g["ua"] for g in row["groups"].values()]))
        assert 0.0 <= row["synthetic_mean_ua"] <= 1.0
    for group in groups:
        manifest = read_manifest(work / "rotation" / "data" / f"ravdess4-test{group}.jsonl")
        first, last = (int(a) for a in group.split("-"))
        tested = {f"Actor_{a:02d}" for a in range(first, last + 1)}
        assert {u.speaker for u in manifest.split("test")} == tested
        assert not tested & {u.speaker for u in manifest.items if u.split != "test"}
        config = (work / "rotation" / f"audio-only-test{group}" / "train_config.yaml").read_text()
        assert "modalities: audio" in config and "train_on_val: true" in config
    assert "| fusion x audio-only |" in (work / "rotation" / "rotation.md").read_text()
    assert list(result["against"]) == ["fusion", "fusion x audio-only"] and result["against_reference"] == "audio-only"
    against = result["against"]["fusion"]["ravdess"]
    assert against["difference"] == pytest.approx(result["heads"]["fusion"]["pooled_ua"] - result["heads"]["audio-only"]["pooled_ua"])
    assert against["low"] <= against["difference"] <= against["high"] and against["resampled"] == "groups"
    # a rerun reuses every finished run and scores them again, to the same figures, and with --voices adds
    # rows scored with test-time augmentation over perturbed voices
    assert rotation.main(["--work", str(work), "--ravdess", str(ravdess), "--set", "epochs=1", "--voices", "speed 0.9",
                          "--set", f"cache_dir={tmp_path / 'cache'}"]) == 0
    again = json.loads((work / "rotation" / "rotation.json").read_text())
    assert again["reused_runs"] == 10 and {h: again["heads"][h] for h in result["heads"]} == result["heads"]
    assert list(again["heads"]) == [*result["heads"], "fusion + voices", "audio-only + voices", "fusion x audio-only + voices"]
    assert again["voices"] == ["speed 0.9"] and again["heads"]["fusion + voices"]["pooled_n"] == 20 * 4 * 2
    with pytest.raises(SystemExit) as exit_:
        rotation.main(["--work", str(work), "--ravdess", str(ravdess), "--voices", "speed"])
    assert exit_.value.code == 2
    # the selection-safe rotation: actors 01-16 only, 17-20 in no run at all
    assert rotation.main(["--work", str(work), "--ravdess", str(ravdess), "--without-test-actors", "--heads", "audio-only",
                          "--set", "epochs=1", "--set", f"cache_dir={tmp_path / 'cache'}"]) == 0
    cv = json.loads((work / "rotation-cv" / "rotation.json").read_text())
    # another config into another folder leaves these runs alone
    assert rotation.main(["--work", str(work), "--ravdess", str(ravdess), "--without-test-actors", "--heads", "audio-only",
                          "--set", "epochs=1", "--set", "lr=0.002", "--set", f"cache_dir={tmp_path / 'cache'}",
                          "--out", str(tmp_path / "other")]) == 0
    assert json.loads((work / "rotation-cv" / "rotation.json").read_text()) == cv
    assert "lr: 0.002" in (tmp_path / "other" / "audio-only-test01-04" / "train_config.yaml").read_text()
    assert "lr: 0.002" not in (work / "rotation-cv" / "audio-only-test01-04" / "train_config.yaml").read_text()
    assert list(cv["heads"]) == ["audio-only"] and list(cv["heads"]["audio-only"]["groups"]) == groups[:4]
    assert cv["left_out_actors"] == [f"Actor_{a}" for a in range(17, 21)]
    for path in (work / "rotation-cv" / "data").glob("*.jsonl"):
        assert not {u.speaker for u in read_manifest(path)} & set(cv["left_out_actors"])
