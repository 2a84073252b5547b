"""Training end to end on tiny random encoders and a small generated corpus; resume; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.tiny_models import save_tiny_bert, save_tiny_hubert

from memocmt.manifest import Manifest, ManifestError, Utterance, write_manifest
from memocmt.trainer.cli import cli
from memocmt.trainer.train import TrainConfig, load_config, train

TONE_HZ = {"neutral": 220.0, "angry": 880.0}
WORDS = {"neutral": "the door is open", "angry": "i am so angry"}
SPLIT_OF = {"s1": "train", "s2": "train", "s3": "train", "s4": "val", "s5": "test"}


def save_tiny_encoders(root: Path) -> tuple[Path, Path]:
    """A 2-layer 32-d HuBERT and BERT with random weights, saved like hub models."""
    return save_tiny_hubert(root / "hubert"), save_tiny_bert(root / "bert")


def write_tone_corpus(root: Path, per_class: int = 3) -> Path:
    """Tones whose pitch (and words) give the class: 5 speakers, 2 classes; returns the manifest path."""
    rng = np.random.default_rng(0)
    items = []
    for speaker, split in SPLIT_OF.items():
        for label, hz in TONE_HZ.items():
            for k in range(per_class):
                t = np.arange(int(16000 * rng.uniform(0.4, 0.7))) / 16000
                audio = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.05 * k) * t) + 0.01 * rng.standard_normal(t.size)
                path = root / "wav" / f"{speaker}_{label}_{k}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, audio.astype(np.float32), 16000, subtype="PCM_16")
                items.append(Utterance(audio=path, text=WORDS[label], label=label, speaker=speaker, split=split,
                                       corpus="tones", id=path.stem))
    return write_manifest(root / "manifest.jsonl", Manifest.from_items(items, list(TONE_HZ)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tiny")
    audio_dir, text_dir = save_tiny_encoders(root)
    return {"root": root, "audio": str(audio_dir), "text": str(text_dir), "manifest": str(write_tone_corpus(root / "data"))}


def tiny_config(tiny: dict, tmp_path: Path, **changes) -> TrainConfig:
    base = dict(
        manifests=[tiny["manifest"]], labels=["neutral", "angry"], preset="paper",
        model={"audio_encoder": tiny["audio"], "text_encoder": tiny["text"], "d_model": 16, "n_heads": 2,
               "head_dims": [8], "layer_mix": True, "pooling": "mean"},
        lr=3e-3, batch_size=4, epochs=3, scheduler="step", step_size=2, gamma=0.5, class_weights=True,
        feature_noise=0.1, frame_drop=0.1, cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "runs"),
    )
    base.update(changes)
    return TrainConfig.from_dict(base)


def test_train_end_to_end(tiny, tmp_path):
    from memocmt.model import load_checkpoint, read_checkpoint

    run = train(tiny_config(tiny, tmp_path), tmp_path / "run", progress=False)
    for name in ("train_config.yaml", "model_config.json", "metrics.jsonl", "best.safetensors", "last.safetensors",
                 "state.pt", "test_metrics.json", "test_metrics.md", "test_metrics.confusion.png", "test_metrics.roc.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    assert records[2]["lr"] == pytest.approx(3e-3 * 0.5)  # StepLR halved it after epoch 2
    config, tensors, extra = read_checkpoint(run / "best.safetensors")
    assert all(k.startswith("head.") for k in tensors) and extra["labels"] == ["neutral", "angry"]
    model = load_checkpoint(run / "best.safetensors")
    prediction = model.predict(np.zeros(8000, dtype=np.float32), "i am so angry")
    assert set(prediction.probabilities) == {"neutral", "angry"}
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["n"] == 6 and 0.0 <= test["ua"] <= 1.0
    assert TrainConfig.from_dict(__import__("yaml").safe_load((run / "train_config.yaml").read_text())).epochs == 3
    # a new run in the same folder replaces the old one's metrics instead of appending to them
    train(tiny_config(tiny, tmp_path, epochs=2), run, progress=False)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_gives_the_same_result(tiny, tmp_path):
    config = tiny_config(tiny, tmp_path, epochs=4)
    full = train(config, tmp_path / "full", progress=False)

    def interrupt(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False, on_epoch_end=interrupt)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)

    from safetensors.torch import load_file

    a, b = load_file(full / "last.safetensors"), load_file(resumed / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    strip = lambda path: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in path.read_text().splitlines()]
    assert strip(full / "metrics.jsonl") == strip(resumed / "metrics.jsonl")


def test_cli_with_overrides_and_resume(tiny, tmp_path, capsys):
    import yaml

    cfg = tiny_config(tiny, tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.__dict__))
    assert cli(["--config", str(path), "--set", "epochs=1", "--set", "model.d_model=8", "--run-dir", str(tmp_path / "r"),
                "--no-progress"]) == 0
    assert json.loads((tmp_path / "r" / "model_config.json").read_text())["d_model"] == 8
    assert cli(["--resume", str(tmp_path / "r"), "--set", "epochs=2", "--no-progress"]) == 0
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(SystemExit):
        cli(["--resume", str(tmp_path / "r"), "--config", str(path)])
    assert cli(["--config", str(path), "--set", "optimizer=sgd"]) == 2
    assert "optimizer 'sgd' is not one of adam, adamw" in capsys.readouterr().err


def test_load_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("manifests: [a.jsonl]\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(path)
    assert load_config(None, ["manifests=[a.jsonl]", "lr=2e-4", "model.dropout=0.3"]).model == {"dropout": 0.3}


def _edited_manifest(tiny, tmp_path, edit) -> str:
    from memocmt.manifest import read_manifest

    m = read_manifest(tiny["manifest"])
    items = [edit(i, u) for i, u in enumerate(m.items)]
    labels = list(dict.fromkeys([*m.labels, *(u.label for u in items)]))
    return str(write_manifest(tmp_path / "edited.jsonl", Manifest.from_items(items, labels), relative=False))


def test_missing_audio_stops_or_is_skipped(tiny, tmp_path):
    import dataclasses

    missing = tmp_path / "gone.wav"
    path = _edited_manifest(tiny, tmp_path, lambda i, u: dataclasses.replace(u, audio=missing) if i == 0 else u)
    with pytest.raises(ManifestError, match="gone.wav: audio file not found"):
        train(tiny_config(tiny, tmp_path, manifests=[path]), tmp_path / "stop", progress=False)
    assert not (tmp_path / "stop").exists()  # stopped before any work
    run = train(tiny_config(tiny, tmp_path, manifests=[path], epochs=1, on_bad_file="skip"), tmp_path / "skip", progress=False)
    assert "gone.wav" in (run / "skipped.txt").read_text()


def test_corrupt_audio_is_named(tiny, tmp_path):
    import dataclasses

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\0" * 40)
    path = _edited_manifest(tiny, tmp_path, lambda i, u: dataclasses.replace(u, audio=bad) if i == 1 else u)
    with pytest.raises(ManifestError, match="bad.wav"):
        train(tiny_config(tiny, tmp_path, manifests=[path]), tmp_path / "stop", progress=False)


def test_unknown_label_overlap_and_empty_split(tiny, tmp_path):
    import dataclasses

    path = _edited_manifest(tiny, tmp_path, lambda i, u: dataclasses.replace(u, label="bored") if i == 2 else u)
    with pytest.raises(ManifestError, match="label 'bored' is not one of"):
        train(tiny_config(tiny, tmp_path, manifests=[path]), tmp_path / "a", progress=False)
    path = _edited_manifest(tiny, tmp_path, lambda i, u: dataclasses.replace(u, split="test") if u.speaker == "s1" and i == 0 else u)
    with pytest.raises(ManifestError, match="both train and test"):
        train(tiny_config(tiny, tmp_path, manifests=[path]), tmp_path / "b", progress=False)
    path = _edited_manifest(tiny, tmp_path, lambda i, u: dataclasses.replace(u, split="train") if u.split == "val" else u)
    with pytest.raises(ManifestError, match="no utterances in split"):
        train(tiny_config(tiny, tmp_path, manifests=[path]), tmp_path / "c", progress=False)


def test_fine_tuning_path_runs_without_cache(tiny, tmp_path):
    config = tiny_config(tiny, tmp_path, epochs=1, model={**tiny_config(tiny, tmp_path).model, "freeze_audio": False})
    run = train(config, tmp_path / "ft", progress=False)
    from memocmt.model import read_checkpoint

    _, tensors, _ = read_checkpoint(run / "best.safetensors")
    assert any(k.startswith("audio_encoder.") for k in tensors)
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny, tmp_path):
    """The documented torchrun path, with the gloo backend on CPU: rank 0 alone writes the run folder."""
    import os
    import subprocess
    import sys

    import yaml

    from memocmt.model import load_checkpoint

    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny, tmp_path, threads=1).__dict__))
    run = tmp_path / "ddp-run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "memocmt.train", "--config", str(config), "--run-dir", str(run), "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]  # one line per epoch: only rank 0 writes
    assert all(np.isfinite(r["train_loss"]) for r in records)
    assert json.loads((run / "test_metrics.json").read_text())["n"] == 6
    prediction = load_checkpoint(run / "last.safetensors").predict(np.zeros(8000, dtype=np.float32), "i am so angry")
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5
