"""Speed/pitch perturbation of training audio: specs, sox, cached copies as new voices, no CV leakage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from memocmt.trainer.embed_cache import EmbeddingCache, embed_manifest
from memocmt.manifest import Manifest, Utterance
from memocmt.perturb import Perturbation, PerturbError, parse_perturbations, perturbed_speaker
from memocmt.trainer.train import TrainConfig, train
from tests.test_embed_cache import model, write_wav  # noqa: F401  (module fixture)
from tests.test_train import tiny, tiny_config  # noqa: F401  (module fixture)

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")


def test_specs_parse_and_bad_ones_are_named():
    p = Perturbation.parse("speed 0.9")
    assert (p.effect, p.amount, p.spec, p.name) == ("speed", 0.9, "speed 0.9", "speed0.9")
    assert Perturbation.parse(" pitch  -200 ").name == "pitch-200"
    for bad, match in (("louder 2", "effect one of"), ("speed", "effect one of"), ("speed fast", "not a number"),
                       ("speed 3", r"\[0.5, 2\]"), ("pitch 0", "change something"), ("tempo 1", "change something")):
        with pytest.raises(PerturbError, match=match):
            Perturbation.parse(bad)
    with pytest.raises(PerturbError, match="repeat"):
        parse_perturbations(["speed 0.9", "speed 0.90"])
    with pytest.raises(ValueError, match="effect one of"):
        TrainConfig.from_dict({"manifests": ["m.jsonl"], "perturb": ["reverb 50"]})
    assert perturbed_speaker(("ravdess", "Actor_01"), p) == ("ravdess", "Actor_01~speed0.9")


@needs_sox
def test_sox_changes_length_as_each_effect_should():
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    slow = Perturbation.parse("speed 0.8").apply(audio)
    fast = Perturbation.parse("tempo 1.25").apply(audio)
    higher = Perturbation.parse("pitch 300").apply(audio)
    assert slow.dtype == np.float32 and abs(slow.size - 20000) < 100 and abs(fast.size - 12800) < 300
    assert abs(higher.size - 16000) < 100
    spectrum = lambda x: np.abs(np.fft.rfft(x[2000:10000]))  # noqa: E731
    peak_hz = lambda x: np.argmax(spectrum(x)) * 16000 / 8000  # noqa: E731
    assert peak_hz(audio) == pytest.approx(220, abs=4)
    assert peak_hz(slow) == pytest.approx(176, abs=4)  # speed scales pitch with tempo
    assert peak_hz(higher) == pytest.approx(220 * 2 ** 0.25, abs=6)  # 300 cents up, same length


def test_missing_sox_is_one_sentence(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(PerturbError, match="apt-get install sox"):
        Perturbation.parse("speed 0.9").apply(np.zeros(1600, np.float32))


@needs_sox
def test_copies_are_cached_apart_as_new_voices(model, tmp_path):  # noqa: F811
    items = [Utterance(audio=write_wav(tmp_path / f"{s}.wav", hz), text="", label="neutral", speaker=s, split="train",
                       corpus="c", id=s) for s, hz in (("a", 300.0), ("b", 500.0))]
    manifest = Manifest.from_items(items, ["neutral", "angry"])
    cache = EmbeddingCache(tmp_path / "cache", model)
    plain = embed_manifest(cache, manifest, progress=False)
    p = Perturbation.parse("speed 1.1")
    copies = embed_manifest(cache, manifest, progress=False, perturbation=p)
    assert copies.ids == plain.ids == ["a", "b"]
    assert copies.speakers == [("c", "a~speed1.1"), ("c", "b~speed1.1")]
    assert copies.audio[0].shape[1] < plain.audio[0].shape[1]  # 10% shorter, so fewer frames
    misses = cache.stats.misses
    again = embed_manifest(cache, manifest, progress=False, perturbation=p)
    assert cache.stats.misses == misses and all((x == y).all() for x, y in zip(again.audio, copies.audio))


@needs_sox
def test_cross_validation_never_trains_on_copies_of_held_out_speakers(tiny, tmp_path):  # noqa: F811
    from memocmt.trainer.crossval import cross_validate

    config = tiny_config(tiny, tmp_path, epochs=1, cv_folds=2, perturb=["speed 1.1"],
                         cv_candidates={"more": {"perturb": ["speed 1.1", "pitch 200"]}, "none": {"perturb": []}},
                         model={**tiny_config(tiny, tmp_path).model, "pooling": "mean+stats", "speaker_norm": "mean+std"})
    cv = cross_validate(config, tmp_path / "cv", progress=False)
    # 2 folds of 2 speakers x 6 utterances: each fold trains on the other 12 and on their copies only
    assert cv["candidates"]["none"]["fold_train_utterances"] == [12, 12]
    assert cv["candidates"]["base"]["fold_train_utterances"] == [24, 24]
    assert cv["candidates"]["more"]["fold_train_utterances"] == [36, 36]
    assert cv["n_utterances"] == 24  # the held-out scores count real utterances only


@needs_sox
def test_training_adds_copies_and_refuses_them_for_fine_tuning(tiny, tmp_path, caplog):  # noqa: F811
    config = tiny_config(tiny, tmp_path, epochs=1, perturb=["speed 0.9", "pitch -200"], perturb_corpora=["tones"])
    with caplog.at_level("INFO", logger="memocmt"):
        run = train(config, tmp_path / "run", progress=False)
    assert "Training on 18 utterances; each epoch draws each one as itself or as one of its 2 perturbed copies" in caplog.text
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1
    skipped = tiny_config(tiny, tmp_path, epochs=1, perturb=["speed 0.9"], perturb_corpora=["other"])
    with caplog.at_level("INFO", logger="memocmt"):
        caplog.clear()
        train(skipped, tmp_path / "run2", progress=False)
    assert "perturbed" not in caplog.text
    fine_tune = tiny_config(tiny, tmp_path, epochs=1, perturb=["speed 0.9"],
                            model={**config.model, "freeze_audio": False})
    with pytest.raises(ValueError, match="frozen encoders"):
        train(fine_tune, tmp_path / "run3", progress=False)


def test_an_epoch_draws_one_version_of_each_utterance():
    from memocmt.trainer.embed_cache import EmbeddedSplit
    from memocmt.trainer.train import CachedDataset, epoch_sampler

    ids = ["a", "b", "c", "a", "b", "c", "a", "b"]  # 3 utterances, then their copies ("c" has one copy)
    split = EmbeddedSplit([None] * 8, [None] * 8, [0, 1, 1, 0, 1, 1, 0, 1], ids, [])
    data = CachedDataset(split, versions=True)
    assert data.versions == [[0, 3, 6], [1, 4, 7], [2, 5]] and data.epoch_targets == [0, 1, 1]
    draws = [epoch_sampler(data, 0, epoch) for epoch in range(1, 40)]
    assert all(sorted(ids[i] for i in d) == ["a", "b", "c"] for d in draws)  # one version of each, every epoch
    assert {i for d in draws for i in d} == set(range(8))  # and every version comes up
    assert epoch_sampler(data, 0, 5) == draws[4] and epoch_sampler(data, 1, 5) != draws[4]  # fixed by (seed, epoch)
    assert len(list(epoch_sampler(CachedDataset(split), 0, 1))) == 8  # without versions: every item


def test_acoustic_conditions_parse_as_perturbations():
    from memocmt.perturb import Acoustic

    pink, babble = parse_perturbations(["pink 5:30", "babble 10"])
    assert isinstance(pink, Acoustic) and pink.spec == "pink 5:30" and pink.name == "pink5:30"
    assert perturbed_speaker(("ravdess", "Actor_01"), pink) == ("ravdess", "Actor_01~pink5:30")
    with pytest.raises(PerturbError, match="must lie in"):
        parse_perturbations(["pink 90"])
    with pytest.raises(PerturbError, match="needs babble clips"):
        babble.apply(np.zeros(1600, np.float32))
    with pytest.raises(PerturbError, match="fewer than two"):
        babble.with_sources(["one.wav"])
    assert pink.with_sources(["a.wav", "b.wav"]) is pink
    # babble follows its clips: another set of training clips is another cached copy
    a, b = babble.with_sources(["x/1.wav", "x/2.wav"]), babble.with_sources(["x/1.wav", "x/3.wav"])
    assert a.spec.startswith("babble 10 @") and a.spec != b.spec and a.name == b.name == "babble10"


def test_noisy_copies_are_seeded_by_file_and_cached_as_new_voices(model, tmp_path):  # noqa: F811
    items = [Utterance(audio=write_wav(tmp_path / f"{s}.wav", hz), text="", label="neutral", speaker=s, split="train",
                       corpus="c", id=s) for s, hz in (("a", 300.0), ("b", 500.0), ("c", 700.0))]
    manifest = Manifest.from_items(items, ["neutral", "angry"])
    cache = EmbeddingCache(tmp_path / "cache", model)
    plain = embed_manifest(cache, manifest, progress=False)
    (p,) = parse_perturbations(["babble 0:10"])
    p = p.with_sources([str(u.audio) for u in items])
    copies = embed_manifest(cache, manifest, progress=False, perturbation=p)
    assert copies.speakers == [("c", "a~babble0:10"), ("c", "b~babble0:10"), ("c", "c~babble0:10")]
    assert not np.allclose(copies.audio[0].float().numpy(), plain.audio[0].float().numpy())
    misses = cache.stats.misses
    again = embed_manifest(cache, manifest, progress=False, perturbation=p)
    assert cache.stats.misses == misses and all((x == y).all() for x, y in zip(again.audio, copies.audio))
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    assert np.array_equal(p.apply(audio, key="a.wav"), p.apply(audio, key="a.wav"))
    assert not np.array_equal(p.apply(audio, key="a.wav"), p.apply(audio, key="b.wav"))


def test_training_draws_noisy_copies(tiny, tmp_path, caplog):  # noqa: F811
    config = tiny_config(tiny, tmp_path, epochs=1, perturb=["pink 5:30", "babble 5:25", "room 0.3:0.6 1:2"])
    with caplog.at_level("INFO", logger="memocmt"):
        train(config, tmp_path / "run", progress=False)
    assert "as itself or as one of its 3 perturbed copies (pink 5:30, babble 5:25, room 0.3:0.6 1:2)" in caplog.text


def test_noisy_copies_are_cut_from_noise_around_the_clip_as_live(speech):
    from memocmt.live.vad import trim_to_speech
    from memocmt.perturb import NOISE_CONTEXT_S, as_trained

    (pink,) = parse_perturbations(["pink 20"])
    assert pink.cache_key != pink.spec and pink.spec == "pink 20"  # copies cut the earlier way are not reused
    noisy = as_trained(speech, pink, "none", "clip.wav")
    assert len(noisy) == len(speech) and np.abs(noisy - speech).max() > 0  # its own span, noise over it
    cut = as_trained(speech, pink, "vad", "clip.wav")
    assert 0.5 * len(trim_to_speech(speech)) < len(cut) < len(speech) + 2 * NOISE_CONTEXT_S * 16000
    assert np.array_equal(cut, as_trained(speech, pink, "vad", "clip.wav"))  # seeded by the file name
    assert np.array_equal(as_trained(speech, None, "vad", "clip.wav"), trim_to_speech(speech))
