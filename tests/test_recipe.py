"""The default-model recipe end to end on a tiny RAVDESS-layout corpus: data, embeddings, CV, the
final runs side by side, evaluation and the timings file."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script, skip_without_recipe_tools
from tests.test_corpora import _ravdess, wav_bytes  # noqa: F401  (fixture)


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
    for argv, message in ((["--ship"], "--ship needs --ablations"), (["--reuse"], "--reuse needs a finished recipe run")):
        with pytest.raises(SystemExit) as stop:
            recipe.main(["--ravdess", str(tmp_path), "--work", str(tmp_path / "work"), *argv])
        assert stop.value.code == 2 and message in capsys.readouterr().err
