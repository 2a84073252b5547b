"""The default-model recipe end to end on a tiny RAVDESS-layout corpus: data, embeddings, CV, the
final runs side by side, evaluation and the timings file."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script, skip_without_recipe_tools
from tests.test_corpora import _ravdess, wav_bytes  # noqa: F401  (fixture)
from tests.test_multicorpus import _nemo


def load_recipe():
    return load_script("training/recipes/default_model.py", "default_model_recipe")


def test_recipe_trains_every_run_and_writes_its_timings(tmp_path, wav_bytes):
    skip_without_recipe_tools()
    ravdess = _ravdess(tmp_path / "RAVDESS", wav_bytes, actors=range(1, 21))
    work = tmp_path / "work"
    recipe = load_recipe()
    assert recipe.main(["--ravdess", str(ravdess), "--work", str(work), "--synthetic-per-class", "3", "--ablations",
                        "--set", "epochs=1", "--set", f"cache_dir={tmp_path / 'cache'}"]) == 0
    summary = json.loads((work / "timings.json").read_text())
    runs = ("edge-ravdess4", "edge-ravdess8", "edge-ravdess4-audio", "edge-ravdess4-text")
    assert set(summary["results"]) == {*runs, "edge-ravdess4-late"}
    for name in runs:
        assert (work / name / "best.safetensors").is_file()
        assert summary["timings_s"][f"train {name}"] > 0 and summary["timings_s"][f"evaluate {name}"] > 0
        # test actors 17-20, two statements per emotion
        assert summary["results"][name]["ravdess"]["n"] == 4 * 2 * (8 if name == "edge-ravdess8" else 4)
    assert summary["results"]["edge-ravdess4"]["ravdess_after_1"]["n"] == summary["results"]["edge-ravdess4"]["ravdess"]["n"]
    assert "ravdess_after_1" not in summary["results"]["edge-ravdess4-text"]  # text-only: no speaker statistics
    # fusion against each ablation on the same test utterances, with bootstrap intervals over test actors
    assert set(summary["fusion_minus_ablation"]) == {"edge-ravdess4-audio", "edge-ravdess4-text"}
    for name, diffs in summary["fusion_minus_ablation"].items():
        for test in ("ravdess", "synthetic"):
            d = diffs[test]
            assert d["difference"] == pytest.approx(summary["results"]["edge-ravdess4"][test]["ua"]
                                                     - summary["results"][name][test]["ua"])
            assert d["low"] <= d["difference"] <= d["high"]
        # four test actors are too few to resample whole: their utterances are drawn within each
        assert diffs["ravdess"]["resampled"] == "utterances within groups" and diffs["ravdess"]["units"] == 4
    assert summary["selection"]["chosen"]["epochs"] == 1 and len(summary["selection"]["folds"]) == 4
    assert (work / "edge-ravdess4" / "cv.json").is_file()
    for name, stop in (("edge-ravdess4-audio", 1), ("edge-ravdess8", 0)):  # the CV's epoch count; 8 classes: the whole schedule
        final = (work / name / "train_config.yaml").read_text()
        assert "train_on_val: true" in final and f"stop_epoch: {stop}" in final, name

    # late fusion: one checkpoint holding the 4-class head and the audio-only one, scored like the others
    from memocmt.model import load_checkpoint

    late = load_checkpoint(work / "edge-ravdess4-late" / "best.safetensors")
    assert [m["modalities"] for m in late.config.members] == ["both", "audio"]
    assert summary["results"]["edge-ravdess4-late"]["ravdess"]["n"] == summary["results"]["edge-ravdess4"]["ravdess"]["n"]
    assert set(summary["late_fusion_minus"]) == {"edge-ravdess4", "edge-ravdess4-audio", "edge-ravdess4-text"}
    d = summary["late_fusion_minus"]["edge-ravdess4-audio"]["synthetic"]
    assert d["difference"] == pytest.approx(summary["results"]["edge-ravdess4-late"]["synthetic"]["ua"]
                                            - summary["results"]["edge-ravdess4-audio"]["synthetic"]["ua"])

    # --reuse scores the same runs again without training them: same scores, the earlier selection
    trained = {name: (work / name / "best.safetensors").read_bytes() for name in runs}
    assert recipe.main(["--ravdess", str(ravdess), "--work", str(work), "--synthetic-per-class", "3", "--ablations",
                        "--reuse", "--set", "epochs=1", "--set", f"cache_dir={tmp_path / 'cache'}"]) == 0
    again = json.loads((work / "timings.json").read_text())
    assert all((work / name / "best.safetensors").read_bytes() == trained[name] for name in runs)
    for name in (*runs, "edge-ravdess4-late"):
        assert again["results"][name]["ravdess"]["ua"] == pytest.approx(summary["results"][name]["ravdess"]["ua"])
    assert again["selection"] == summary["selection"] and "reused_runs" in again
    assert again["timings_s"]["train edge-ravdess4"] == summary["timings_s"]["train edge-ravdess4"]


def test_recipe_refuses_ship_without_ablations_and_reuse_without_runs(tmp_path, capsys):
    recipe = load_recipe()
    for argv, message in ((["--ship"], "--ship needs --ablations"), (["--reuse"], "--reuse needs a finished recipe run"),
                          (["--nemo", str(tmp_path)], "is not an nEMO folder"), (["--epoch-size", "100"], "--epoch-size needs --nemo")):
        with pytest.raises(SystemExit) as stop:
            recipe.main(["--ravdess", str(tmp_path), "--work", str(tmp_path / "work"), *argv])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_recipe_with_nemo_trains_on_both_corpora_and_scores_each(tmp_path, wav_bytes):
    skip_without_recipe_tools()
    yaml = pytest.importorskip("yaml")
    ravdess = _ravdess(tmp_path / "RAVDESS", wav_bytes, actors=range(1, 21))
    nemo = _nemo(tmp_path / "nemo", wav_bytes)
    for speaker in ("SM0", "TP0", "MK0"):  # the held-out actors KD0 and SM0, validation IC0 and TP0
        for emotion in ("neutral", "anger"):
            name = f"{speaker}_{emotion}_1.flac"
            (nemo / "samples" / name).write_bytes(wav_bytes)
            with (nemo / "data.tsv").open("a", encoding="utf-8") as f:
                f.write(f"{name}\t{emotion}\tZdanie 1.\tzdanie 1\t{speaker}\tmale\t30\n")
    work = tmp_path / "work"
    assert load_recipe().main(["--ravdess", str(ravdess), "--nemo", str(nemo), "--work", str(work), "--skip-8class",
                               "--synthetic-per-class", "3", "--ablations", "--set", "epochs=1",
                               "--set", "perturb=[speed 0.9]", "--set", f"cache_dir={tmp_path / 'cache'}"]) == 0
    summary = json.loads((work / "timings.json").read_text())
    for name in ("edge-ravdess4", "edge-ravdess4-audio", "edge-ravdess4-late"):
        scores = summary["results"][name]
        assert scores["ravdess"]["n"] == 4 * 2 * 4 and scores["nemo"]["n"] == 4 * 2 + 2  # KD0 and SM0, never pooled
        assert {"ua", "wa", "ece"} <= set(scores["nemo"])
    assert set(summary["fusion_minus_ablation"]["edge-ravdess4-audio"]) == {"ravdess", "synthetic", "nemo"}
    config = yaml.safe_load((work / "edge-ravdess4" / "train_config.yaml").read_text())
    assert config["balance"] == "corpus+class" and not config["class_weights"]
    assert config["perturb_corpora"] == ["ravdess", "nemo"] and config["cv_corpora"] == ["ravdess", "nemo"]
    assert 0 < config["epoch_size"] == summary["corpora"]["sampling"]["epoch_size"]
    assert summary["corpora"]["nemo"]["licence"] == "CC BY-NC-SA 4.0"
    folds = summary["selection"]["folds"]  # every CV fold holds out speakers of both corpora
    assert all(any(s.startswith("Actor_") for s in f) and any(not s.startswith("Actor_") for s in f) for f in folds)
    assert not {s for f in folds for s in f} & {"KD0", "SM0", "Actor_17", "Actor_18", "Actor_19", "Actor_20"}
    from memocmt.model import read_checkpoint

    assert read_checkpoint(work / "edge-ravdess4" / "best.safetensors")[2]["epoch_size"] == config["epoch_size"]
