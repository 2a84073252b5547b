"""Embedding cache: hits, misses, invalidation on a changed file or encoder, corrupt entries."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from memocmt.audio import AudioError
from memocmt.trainer.embed_cache import EmbeddingCache, embed_manifest, encoder_fingerprint
from memocmt.manifest import Manifest, ManifestError, Utterance


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from memocmt.config import MemoCMTConfig
    from memocmt.model import MemoCMT
    from tests.test_train import save_tiny_encoders

    audio_dir, text_dir = save_tiny_encoders(tmp_path_factory.mktemp("enc"))
    config = MemoCMTConfig(audio_encoder=str(audio_dir), text_encoder=str(text_dir), labels=["neutral", "angry"],
                           d_model=16, n_heads=2, head_dims=[8], layer_mix=True)
    return MemoCMT(config).eval()


def write_wav(path: Path, hz: float = 440.0, seconds: float = 0.5) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000, subtype="PCM_16")
    return path


def test_hit_miss_and_equality_with_the_encoder(model, tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    cache = EmbeddingCache(tmp_path / "cache", model)
    first = cache.audio(wav)
    assert (cache.stats.hits, cache.stats.misses) == (0, 1)
    again = EmbeddingCache(tmp_path / "cache", model).audio(wav)  # a new process would see the same file
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert first.dtype == torch.float16 and first.shape[0] == model.config.audio_num_layers
    from memocmt.audio import load_audio

    batch = model.prepare([load_audio(wav)], ["i am so angry"])
    with torch.inference_mode():
        states, lengths = model.encode_audio(batch.audio_features, batch.audio_lengths)
        text_states, _ = model.encode_text(batch.input_ids, batch.text_mask)
    torch.testing.assert_close(first.float(), states[0, :, : int(lengths[0])], atol=2e-2, rtol=1e-2)
    text = cache.text("i am so angry")
    torch.testing.assert_close(text.float(), text_states[0], atol=2e-2, rtol=1e-2)
    cache.text("i am so angry")
    assert cache.stats.hits == 1


def test_changed_file_is_re_encoded(model, tmp_path):
    wav = write_wav(tmp_path / "a.wav", hz=300)
    cache = EmbeddingCache(tmp_path / "cache", model)
    before = cache.audio(wav)
    old = cache.entry_path("audio", __import__("memocmt.trainer.embed_cache").trainer.embed_cache.audio_file_key(wav))
    write_wav(wav, hz=1200, seconds=0.6)
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    after = cache.audio(wav)
    assert cache.stats.misses == 2 and after.shape != before.shape
    assert old.is_file()  # the stale entry is simply never read again


def test_a_copied_or_touched_file_keeps_its_entry(model, tmp_path):
    wav = write_wav(tmp_path / "a.wav", hz=300)
    cache = EmbeddingCache(tmp_path / "cache", model)
    first = cache.audio(wav)
    copy = tmp_path / "elsewhere" / "b.wav"
    copy.parent.mkdir()
    copy.write_bytes(wav.read_bytes())
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    assert torch.equal(cache.audio(copy), first) and torch.equal(cache.audio(wav), first)
    assert (cache.stats.hits, cache.stats.misses) == (2, 1)


def test_changed_encoder_gets_its_own_entries(model, tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    spec = {"name": "x"}
    fingerprint = encoder_fingerprint(model.audio_encoder, spec)
    assert fingerprint == encoder_fingerprint(model.audio_encoder, spec)
    assert fingerprint != encoder_fingerprint(model.audio_encoder, {"name": "y"})
    cache = EmbeddingCache(tmp_path / "cache", model)
    cache.audio(wav)
    with torch.no_grad():
        param = next(model.audio_encoder.parameters())
        param.add_(1.0)
        try:
            other = EmbeddingCache(tmp_path / "cache", model)
            other.audio(wav)
            assert other.stats.misses == 1
            assert len([p for p in (tmp_path / "cache").iterdir() if p.name.startswith("audio-")]) == 2
        finally:
            param.sub_(1.0)


def test_corrupt_entry_is_reported_and_recomputed(model, tmp_path, caplog):
    wav = write_wav(tmp_path / "a.wav")
    cache = EmbeddingCache(tmp_path / "cache", model)
    good = cache.audio(wav)
    entry = next((tmp_path / "cache").rglob("*.safetensors"))
    entry.write_bytes(b"not a safetensors file")
    with caplog.at_level("WARNING", logger="memocmt"):
        again = cache.audio(wav)
    assert "Corrupt embedding cache entry" in caplog.text and str(entry) in caplog.text
    assert cache.stats.corrupt == [str(entry)]
    torch.testing.assert_close(good, again, rtol=0, atol=0)
    assert EmbeddingCache(tmp_path / "cache", model).audio(wav).shape == good.shape


def test_embed_manifest_skips_or_stops_on_bad_audio(model, tmp_path):
    good = write_wav(tmp_path / "good.wav")
    short = write_wav(tmp_path / "short.wav", seconds=0.02)
    items = [Utterance(audio=p, text="i am so angry", label="angry", speaker="s", split="train", id=p.stem)
             for p in (good, short)]
    manifest = Manifest.from_items(items, ["neutral", "angry"])
    cache = EmbeddingCache(tmp_path / "cache", model)
    with pytest.raises(ManifestError, match="short.wav"):
        embed_manifest(cache, manifest, on_bad_file="stop", progress=False)
    split = embed_manifest(cache, manifest, on_bad_file="skip", progress=False)
    assert len(split) == 1 and split.targets == [1] and split.ids == ["good"]
    assert len(split.skipped) == 1 and "short.wav" in split.skipped[0].path
    with pytest.raises(AudioError, match="not found"):
        cache.audio(tmp_path / "missing.wav")
