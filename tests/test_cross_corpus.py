"""The cross-corpus recipe end to end on tiny RAVDESS- and nEMO-layout corpora: leave-one-corpus-out and
mixed training, each scored per corpus on held-out speakers, with paired bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memocmt.manifest import read_manifest
from tests.scripts import load_script, skip_without_recipe_tools
from tests.test_corpora import _ravdess, wav_bytes  # noqa: F401  (fixture)
from tests.test_multicorpus import _nemo


def load_recipe():
    return load_script("training/recipes/cross_corpus.py", "cross_corpus_recipe")


def test_expected_calibration_error():
    ece = load_recipe().expected_calibration_error
    assert ece(np.array([[0.9, 0.1], [0.9, 0.1]]), [0, 0]) == pytest.approx(0.1)  # 90% sure, always right
    assert ece(np.array([[0.6, 0.4], [0.6, 0.4]]), [0, 1]) == pytest.approx(0.1)  # 60% sure, right half the time
    assert ece(np.array([[1.0, 0.0]]), [0]) == pytest.approx(0.0)


def test_recipe_refuses_missing_corpora(tmp_path, capsys):
    recipe = load_recipe()
    for argv in (["--ravdess", str(tmp_path / "none")], ["--ravdess", str(tmp_path), "--nemo", str(tmp_path / "none")]):
        with pytest.raises(SystemExit) as stop:
            recipe.main(argv)
        assert stop.value.code == 2 and "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        recipe.main(["--ravdess", str(tmp_path), "--nemo", str(tmp_path), "--epoch-size", "-3"])
    assert stop.value.code == 2 and "--epoch-size and --epochs must be positive" in capsys.readouterr().err


def test_leave_one_corpus_out_and_mixed_runs_are_scored_per_corpus(tmp_path, wav_bytes):
    skip_without_recipe_tools()
    yaml = pytest.importorskip("yaml")
    ravdess = _ravdess(tmp_path / "RAVDESS", wav_bytes, actors=range(1, 21))
    nemo = _nemo(tmp_path / "nemo", wav_bytes)
    work, out = tmp_path / "work", tmp_path / "results"
    argv = ["--ravdess", str(ravdess), "--nemo", str(nemo), "--work", str(work), "--out", str(out),
            "--nemo-test-speakers", "KD0", "--nemo-val-speakers", "IC0", "--set", "epochs=1",
            "--set", "perturb=[speed 0.9]", "--set", f"cache_dir={tmp_path / 'cache'}"]
    recipe = load_recipe()
    assert recipe.main(argv) == 0
    result = json.loads((out / "cross_corpus.json").read_text())
    assert list(result["runs"]) == ["ravdess-only", "nemo-only", "mixed", "mixed-audio", "ravdess-only-audio"]
    assert result["reused_runs"] == 0 and result["epoch_size"] == 4 * 14 * 2  # RAVDESS's training utterances
    for name, row in result["runs"].items():
        assert row["ravdess"]["n"] == 4 * 4 * 2 and row["nemo"]["n"] == 4 * 2  # actors 17-20; KD0: 4 emotions x 2
        assert 0.0 <= row["ravdess"]["ece"] <= 1.0 and 0.0 <= row["nemo"]["ua"] <= 1.0
    # what each run trained on: one corpus, or both with validation speakers of both and balanced sampling
    for name, corpora in (("ravdess-only", {"ravdess"}), ("nemo-only", {"nemo"}), ("mixed", {"ravdess", "nemo"}),
                          ("mixed-audio", {"ravdess", "nemo"})):
        config = (work / name / "train_config.yaml").read_text()
        assert f"epoch_size: {result['epoch_size']}" in config
        assert ("modalities: audio" in config) == (name == "mixed-audio")
        manifest = read_manifest(yaml.safe_load(config)["manifests"][0])
        assert {u.corpus for u in manifest.split("train")} == corpora == {u.corpus for u in manifest.split("val")}
        assert "balance: corpus+class" in config and "class_weights: false" in config
        tested = {u.speaker for u in manifest.split("test")}
        assert not tested & {u.speaker for u in manifest.items if u.split != "test"}
        assert tested <= {"Actor_17", "Actor_18", "Actor_19", "Actor_20", "KD0"}
    assert "perturb_corpora:\n- ravdess\n- nemo" in (work / "mixed" / "train_config.yaml").read_text()
    against = result["against_mixed"]
    assert list(against) == ["ravdess-only", "nemo-only"]
    for name, diffs in against.items():
        for corpus in ("ravdess", "nemo"):
            d = diffs[corpus]
            assert d["difference"] == pytest.approx(result["runs"]["mixed"][corpus]["ua"] - result["runs"][name][corpus]["ua"])
            assert d["low"] <= d["difference"] <= d["high"]
    assert set(result["text_contribution"]) == {"mixed", "ravdess-only"}  # fusion minus its audio-only twin
    d = result["text_contribution"]["mixed"]["nemo"]
    assert d["difference"] == pytest.approx(result["runs"]["mixed"]["nemo"]["ua"] - result["runs"]["mixed-audio"]["nemo"]["ua"])
    assert "| mixed | ravdess + nemo |" in (out / "cross_corpus.md").read_text()
    assert set(json.loads((out / "predictions-mixed.json").read_text())) == {"ravdess", "nemo"}
    # a rerun reuses the finished runs and scores them to the same figures
    assert recipe.main(argv) == 0
    again = json.loads((out / "cross_corpus.json").read_text())
    assert again["reused_runs"] == 5 and again["runs"]["mixed"]["nemo"] == result["runs"]["mixed"]["nemo"]
    # one leave-one-corpus-out run alone: scored per corpus, nothing to compare it with
    assert recipe.main([*argv, "--runs", "ravdess-only"]) == 0
    alone = json.loads((out / "cross_corpus.json").read_text())
    assert list(alone["runs"]) == ["ravdess-only"] and alone["against_mixed"] == {} and alone["reused_runs"] == 1
    for key in ("ua", "n"):
        assert alone["runs"]["ravdess-only"]["nemo"][key] == result["runs"]["ravdess-only"]["nemo"][key]
