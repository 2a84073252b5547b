"""Speaker cross-validation for model selection: folds, the CV table, the retrain on train + val."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from memocmt.trainer.crossval import candidate_configs, speaker_folds, train_with_cv
from memocmt.manifest import Manifest, Utterance
from memocmt.trainer.cli import cli
from memocmt.trainer.train import TrainConfig, load_config, train
from tests.test_train import tiny, tiny_config  # noqa: F401  (module fixture)


def utterance(speaker: str, corpus: str = "real", split: str = "train") -> Utterance:
    return Utterance(audio=Path(f"/x/{corpus}-{speaker}.wav"), text="", label="a", speaker=speaker, split=split, corpus=corpus)


def test_speaker_folds_are_disjoint_contiguous_blocks_of_the_chosen_corpora():
    items = [utterance(f"A{i:02d}") for i in range(1, 11)] + [utterance("v1", "synth"), utterance("v2", "synth")]
    folds = speaker_folds(Manifest.from_items(items), 4, ["real"])
    names = [[s for _, s in f] for f in folds]
    assert sum(names, []) == [f"A{i:02d}" for i in range(1, 11)]  # contiguous, disjoint, synthetic voices left out
    assert sorted(map(len, names)) == [2, 2, 3, 3]
    assert len(speaker_folds(Manifest.from_items(items), 3)) == 3 and sum(map(len, speaker_folds(Manifest.from_items(items), 3))) == 12
    with pytest.raises(ValueError, match="at least 4 speakers"):
        speaker_folds(Manifest.from_items(items), 4, ["synth"])


def test_speaker_folds_of_two_corpora_hold_speakers_of_both():
    items = [utterance(f"A{i:02d}", "ravdess") for i in range(1, 17)] + [utterance(s, "nemo") for s in
                                                                          ("EB0", "IC0", "KS0", "MK0", "MP0", "TP0", "WR0")]
    folds = speaker_folds(Manifest.from_items(items), 4, ["ravdess", "nemo"])
    assert all({c for c, _ in f} == {"ravdess", "nemo"} for f in folds)  # no fold of one corpus only
    assert sorted(k for f in folds for k in f) == sorted(u.speaker_key() for u in items)
    assert [[s for c, s in f if c == "ravdess"] for f in folds] == \
        [[s for _, s in f] for f in speaker_folds(Manifest.from_items(items[:16]), 4)]  # one corpus: as before
    few = items[:16] + [utterance("EB0", "nemo"), utterance("IC0", "nemo")]  # 2 nEMO speakers for 4 folds: still covered
    assert sorted(k for f in speaker_folds(Manifest.from_items(few), 4) for k in f) == sorted(u.speaker_key() for u in few)


def test_config_checks_and_candidates():
    base = dict(manifests=["m.jsonl"], model={"d_model": 16, "pooling": "mean"}, epochs=4)
    with pytest.raises(ValueError, match="cv_folds"):
        TrainConfig.from_dict({**base, "cv_folds": 1})
    with pytest.raises(ValueError, match="stop_epoch"):
        TrainConfig.from_dict({**base, "stop_epoch": 5})
    with pytest.raises(ValueError, match="mapping"):
        TrainConfig.from_dict({**base, "cv_candidates": {"x": "epochs=3"}})
    config = TrainConfig.from_dict({**base, "cv_candidates": {"stats": {"model": {"pooling": "mean+stats"}, "lr": 0.01}}})
    candidates = candidate_configs(config)
    assert list(candidates) == ["base", "stats"]
    assert candidates["stats"].model == {"d_model": 16, "pooling": "mean+stats"} and candidates["stats"].lr == 0.01
    assert candidates["base"].model == config.model and not candidates["stats"].cv_candidates


def test_cross_validation_chooses_and_retrains_on_train_and_val(tiny, tmp_path):
    # the candidate also normalises speakers: CV folds carry each speaker's statistics and the fold's prior
    config = tiny_config(tiny, tmp_path, epochs=3, scheduler="cosine", cv_folds=2,
                         cv_candidates={"stats": {"model": {"pooling": "mean+stats", "speaker_norm": "mean+std"},
                                                  "speaker_subsample": 0.5, "epochs": 2}})
    run = train_with_cv(config, tmp_path / "run", progress=False)
    cv = json.loads((run / "cv.json").read_text())
    assert cv["folds"] == [["s1", "s2"], ["s3", "s4"]]  # the test speaker s5 takes no part
    assert cv["n_utterances"] == 4 * 2 * 3 and cv["n_always_train"] == 0
    for name, epochs in (("base", 3), ("stats", 2)):
        row = cv["candidates"][name]
        assert len(row["fold_ua"]) == 2 and all(len(f) == epochs for f in row["fold_ua"])
        assert row["mean_ua"] == pytest.approx(np.mean(row["fold_ua"], axis=0).tolist())
        assert row["best_mean_ua"] == max(row["mean_ua"]) == row["mean_ua"][row["best_epoch"] - 1]
    chosen = cv["chosen"]
    assert chosen["mean_ua"] == max(c["best_mean_ua"] for c in cv["candidates"].values())
    assert chosen["epochs"] == cv["candidates"][chosen["candidate"]]["best_epoch"]
    table = (run / "cv.md").read_text()
    assert "| base" in table and "| stats" in table and "(chosen)" in table

    final = TrainConfig.from_dict(yaml.safe_load((run / "train_config.yaml").read_text()))
    assert final.train_on_val and final.cv_folds == 0 and final.stop_epoch == chosen["epochs"]
    assert final.epochs == (3 if chosen["candidate"] == "base" else 2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, chosen["epochs"] + 1))
    assert all(r["val_ua"] is None and r["best"] for r in records)  # no val split left to select on
    assert (run / "best.safetensors").is_file() and (run / "test_metrics.json").is_file()


def test_stop_epoch_keeps_the_schedule_and_train_on_val_uses_the_val_speakers(tiny, tmp_path):
    full = train(tiny_config(tiny, tmp_path, epochs=4, scheduler="cosine"), tmp_path / "full", progress=False)
    cut = train(tiny_config(tiny, tmp_path, epochs=4, scheduler="cosine", stop_epoch=2), tmp_path / "cut", progress=False)
    lrs = lambda run: [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs(cut) == lrs(full)[:2]  # the first two epochs of the 4-epoch cosine schedule
    merged = train(tiny_config(tiny, tmp_path, epochs=1, train_on_val=True), tmp_path / "both", progress=False)
    record = json.loads((merged / "metrics.jsonl").read_text())
    assert record["val_ua"] is None and record["best"] and (merged / "best.safetensors").is_file()


def test_cli_cv_folds(tiny, tmp_path, capsys):
    cfg = tiny_config(tiny, tmp_path, epochs=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.__dict__))
    assert cli(["--config", str(path), "--cv-folds", "2", "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 0
    assert (tmp_path / "r" / "cv.md").is_file() and (tmp_path / "r" / "best.safetensors").is_file()
    assert load_config(tmp_path / "r" / "train_config.yaml").train_on_val
    assert cli(["--config", str(path), "--cv-folds", "1"]) == 2
    assert "cv_folds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["--resume", str(tmp_path / "r"), "--cv-folds", "2"])


def test_folds_trained_side_by_side_score_exactly_as_one_after_another(tiny, tmp_path):
    import multiprocessing

    from memocmt.trainer.crossval import cross_validate

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("parallel folds need the fork start method")
    model = {**tiny_config(tiny, tmp_path).model, "pooling": "mean+stats", "speaker_norm": "mean+std"}
    base = dict(epochs=2, cv_folds=2, threads=1, model=model, speaker_subsample=0.5, feature_noise=0.1, frame_drop=0.1)
    one = cross_validate(tiny_config(tiny, tmp_path, cv_workers=1, **base), tmp_path / "one", progress=False)
    two = cross_validate(tiny_config(tiny, tmp_path, cv_workers=2, **base), tmp_path / "two", progress=False)
    for key in ("fold_ua", "fold_loss", "fold_train_utterances"):  # the held-out loss is exact to the last bit
        assert two["candidates"]["base"][key] == one["candidates"]["base"][key], key
    assert len({loss for fold in one["candidates"]["base"]["fold_loss"] for loss in fold}) == 4
    with pytest.raises(ValueError, match="cv_workers"):
        TrainConfig.from_dict({"manifests": ["m.jsonl"], "cv_workers": -1})


def test_cross_validation_keeps_held_out_predictions_and_calibrates_the_final_checkpoint(tiny, tmp_path):
    from memocmt.trainer.crossval import cross_validate, held_out_logprobs
    from memocmt.model import load_checkpoint, read_checkpoint

    model = {**tiny_config(tiny, tmp_path).model, "pooling": "mean+stats", "speaker_norm": "mean+std"}
    config = tiny_config(tiny, tmp_path, epochs=2, cv_folds=2, model=model, speaker_subsample=0.5)
    run = train_with_cv(config, tmp_path / "run", progress=False)
    cv = json.loads((run / "cv.json").read_text())
    data = np.load(run / "cv_oof-base.npz")
    # every train+val utterance held out once, after each of the 2 epochs, scored two ways
    assert data["all"].shape == data["session"].shape == (2, cv["n_utterances"], 2)
    assert sorted(data["fold"].tolist()) == [0] * 12 + [1] * 12
    assert np.allclose(np.exp(data["all"]).sum(-1), 1.0, atol=1e-4)
    logprobs, targets = held_out_logprobs(run, cv["chosen"]["epochs"])
    assert len(logprobs) == len(targets) == 2 * cv["n_utterances"]
    with pytest.raises(ValueError, match="ran 2 epochs"):
        held_out_logprobs(run, 3)
    calibration = json.loads((run / "calibration.json").read_text())
    config_saved, _, extra = read_checkpoint(run / "best.safetensors")
    assert config_saved.temperature == pytest.approx(calibration["temperature"]) and calibration["temperature"] > 0
    assert extra["calibration"]["temperature"] == calibration["temperature"]
    assert calibration["held_out_nll_after"] <= calibration["held_out_nll_before"] + 1e-9  # fitted on exactly these
    assert load_checkpoint(run / "best.safetensors").head.temperature == pytest.approx(calibration["temperature"])


def test_calibration_also_holds_out_the_speakers_in_noisy_rooms(tiny, tmp_path):
    from memocmt.trainer.crossval import cross_validate, held_out_logprobs

    model = {**tiny_config(tiny, tmp_path).model, "pooling": "mean+stats", "speaker_norm": "mean+std"}
    config = tiny_config(tiny, tmp_path, epochs=1, cv_folds=2, model=model, perturb=["speed 1.1", "pink 0:10"])
    cv = cross_validate(config, tmp_path / "cv", progress=False)
    data = np.load(tmp_path / "cv" / "cv_oof-base.npz")
    # the noisy copies of each fold's held-out speakers (not the sox voices) are scored too, with their labels
    assert data["noisy"].shape == (1, cv["n_utterances"], 2)
    assert sorted(data["noisy_targets"].tolist()) == sorted(data["targets"].tolist())
    logprobs, targets = held_out_logprobs(tmp_path / "cv", 1)
    assert len(logprobs) == len(targets) == 3 * cv["n_utterances"]
