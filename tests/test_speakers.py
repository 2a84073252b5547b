"""Voice signatures and live speaker tracking: fitting, tracking, checkpoints, bundles, live, training, benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from memocmt.speaker_norm import SpeakerAdapter, pool_stats
from memocmt.speakers import SpeakerTracker, VoiceError, VoiceProjection

LAYERS, DIM = 2, 12


def voices_corpus(n_speakers=6, per_speaker=10, seed=0):
    """(N, 2, L, D) utterance statistics: each speaker a small fixed voice offset, each utterance a
    much larger 'emotion' offset along directions every speaker shares; returns stats, speakers."""
    rng = np.random.default_rng(seed)
    voice = 1.0 * rng.standard_normal((n_speakers, LAYERS, DIM))
    emotions = 4.0 * np.random.default_rng(100).standard_normal((3, LAYERS, DIM))  # every speaker's, larger than voices
    stats, speakers = [], []
    for s in range(n_speakers):
        for k in range(per_speaker):
            mean = voice[s] + rng.standard_normal() * emotions[k % 3] + 0.1 * rng.standard_normal((LAYERS, DIM))
            stats.append(np.stack([mean, np.ones((LAYERS, DIM))]))
            speakers.append(f"s{s}")
    return np.asarray(stats, np.float32), speakers


def pair_distances(d, speakers):
    """Same-speaker and different-speaker entries of a square distance matrix."""
    same = np.equal.outer(speakers, speakers) & ~np.eye(len(d), dtype=bool)
    return d[same], d[~np.equal.outer(speakers, speakers)]


def test_signatures_tell_held_out_speakers_apart_better_than_raw_means():
    stats, speakers = voices_corpus()
    voices = VoiceProjection.fit(stats, speakers, dims=20)
    test_stats, test_speakers = voices_corpus(n_speakers=4, seed=1)  # other people, the same emotions
    z = voices.signatures(test_stats)
    assert z.shape == (len(test_stats), 20)
    same, different = pair_distances(voices.distance(z, z), test_speakers)
    raw = test_stats[:, 0].reshape(len(test_stats), -1)
    raw_same, raw_different = pair_distances(np.linalg.norm(raw[:, None] - raw[None], axis=-1), test_speakers)
    # whitening by the within-speaker spread discounts the emotion directions every speaker shares
    assert different.mean() / same.mean() > 2 * raw_different.mean() / raw_same.mean()
    assert same.mean() < voices.threshold < different.mean()
    assert voices.signatures(test_stats[0]).shape == (1, 20)  # one utterance's (2, L, D) statistics
    # a shift every utterance of a session shares (another microphone) leaves the distances alone
    shifted = test_stats.copy()
    shifted[:, 0] += 3.0 * np.random.default_rng(2).standard_normal((LAYERS, DIM))
    zs = voices.signatures(shifted)
    assert np.allclose(voices.distance(zs, zs), voices.distance(z, z), atol=1e-3)


def test_fitting_and_using_signatures_refuse_bad_input():
    stats, speakers = voices_corpus(n_speakers=3)
    with pytest.raises(VoiceError, match="at least two speakers with two or more"):
        VoiceProjection.fit(stats[:11], ["a"] * 10 + ["b"])
    with pytest.raises(VoiceError, match="but 2 speakers"):
        VoiceProjection.fit(stats, ["a", "b"])
    voices = VoiceProjection.fit(stats, speakers)
    with pytest.raises(VoiceError, match="another audio encoder"):
        voices.signatures(np.zeros((1, 2, LAYERS + 1, DIM), np.float32))
    with pytest.raises(VoiceError, match="shape"):
        voices.signatures(np.zeros((4, LAYERS, DIM), np.float32))
    with pytest.raises(VoiceError, match="center and an"):
        VoiceProjection(np.zeros(5), np.zeros((4, 2)))


def test_tracker_gives_each_voice_its_own_window():
    stats, speakers = voices_corpus(n_speakers=6, per_speaker=10)
    voices = VoiceProjection.fit(stats[:40], speakers[:40], dims=20)  # fitted on s0-s3; s4 and s5 talk
    talk = [i for pair in zip(range(40, 50), range(50, 60)) for i in pair]  # s4, s5, s4, s5, ...
    prior = pool_stats(stats[:40])
    tracker, per_speaker = SpeakerTracker(voices, window=5, prior=prior), {}
    assigned = []
    for i in talk:
        pooled, voice = tracker.update(stats[i])
        assigned.append(voice)
        expected = per_speaker.setdefault(speakers[i], SpeakerAdapter(5, prior)).update(stats[i])
        if assigned.count(voice) == len([j for j in talk[: len(assigned)] if speakers[j] == speakers[i]]):
            assert np.allclose(pooled, expected, atol=1e-5)  # its window holds exactly its speaker's utterances
    assert len(tracker) == 2 and assigned[:2] == [0, 1]
    assert assigned == [0, 1] * 10
    tracker.reset()
    assert len(tracker) == 0 and tracker.update(stats[talk[1]])[1] == 0
    one = SpeakerTracker(None, window=5, prior=prior)  # no voice signatures: everyone shares one window
    pooled = [one.update(stats[i]) for i in talk[:6]]
    assert len(one) == 1 and all(voice is None for _, voice in pooled)
    assert np.allclose(pooled[-1][0], pool_stats(stats[talk[1:6]], prior)[None], atol=1e-5)


def test_tracker_caps_the_number_of_voices_and_checks_its_settings():
    stats, speakers = voices_corpus()
    voices = VoiceProjection.fit(stats, speakers, dims=20, threshold=0.0)  # nothing is ever "the same voice"
    tracker = SpeakerTracker(voices, max_voices=3)
    assert [tracker.update(s)[1] for s in stats[:3]] == [0, 1, 2]
    assert tracker.update(stats[3])[1] in (0, 1, 2) and len(tracker) == 3
    with pytest.raises(ValueError, match="at least one voice"):
        SpeakerTracker(voices, max_voices=0)
    with pytest.raises(ValueError, match="window of at least one"):
        SpeakerTracker(voices, window=0)


# ---------------------------------------------------------------------- checkpoint, bundle, live


@pytest.fixture(scope="module")
def tiny_with_voices(tmp_path_factory):
    import torch

    from tests.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("voices")
    model = build_tiny_model(root / "models", speaker_norm="mean+std")
    rng = np.random.default_rng(0)
    clips = [(0.2 * np.sin(np.arange(6000 + 500 * i) * (0.03 + 0.02 * (i % 3))) + 0.01 * rng.standard_normal(6000 + 500 * i))
             .astype(np.float32) for i in range(9)]
    stats = model.audio_stats(clips)
    model.head.speaker_prior.copy_(torch.from_numpy(pool_stats(stats)))
    model.voices = VoiceProjection.fit(stats, [i % 3 for i in range(9)], dims=6)
    return model, clips, root


def test_checkpoints_carry_voices_and_keep_their_permissions(tiny_with_voices, tmp_path):
    import os

    from memocmt.model import load_checkpoint, save_checkpoint

    model, _, _ = tiny_with_voices
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    os.chmod(path, 0o640)
    save_checkpoint(model, path)
    assert (path.stat().st_mode & 0o777) == 0o640
    loaded = load_checkpoint(path)
    assert np.allclose(loaded.voices.matrix, model.voices.matrix) and loaded.voices.threshold == model.voices.threshold
    voices, model.voices = model.voices, None
    try:
        save_checkpoint(model, path)
        assert load_checkpoint(path).voices is None  # a checkpoint from before voice signatures
    finally:
        model.voices = voices


def test_bundles_carry_voices_and_live_names_the_speaker(tiny_with_voices):
    pytest.importorskip("onnxruntime")
    from memocmt.live.pipeline import BundleEmotionModel
    from memocmt.onnx.export import export_bundle
    from memocmt.runtime import VOICES_FILE, BundleError, load_bundle

    model, clips, root = tiny_with_voices
    result = export_bundle(model, root / "bundle")
    assert result.manifest["voices"]["dims"] == 6 and VOICES_FILE in result.manifest["files"]
    bundle = load_bundle(result.path, "cpu")
    assert np.allclose(bundle.voices.center, model.voices.center)
    live = BundleEmotionModel(bundle, "tiny", adapt_window=4)
    assert live.tracks_speakers
    said = [live.predict(c, "hello").speaker for c in clips[:4]]
    assert said[0] == 0 and all(isinstance(s, int) for s in said)
    one = BundleEmotionModel(bundle, "tiny", adapt_window=4, track_speakers=False)
    assert not one.tracks_speakers and one.predict(clips[0], "hello").speaker is None
    (result.path / VOICES_FILE).write_bytes(b"not numpy")
    with pytest.raises(BundleError, match=VOICES_FILE):
        load_bundle(result.path, "cpu")


def test_training_fits_voices_and_fit_voices_adds_them_to_an_old_checkpoint(tmp_path):
    from tests.test_train import save_tiny_encoders, tiny_config, write_tone_corpus

    from memocmt.model import load_checkpoint, save_checkpoint
    from memocmt.trainer.cli import cli
    from memocmt.trainer.train import train

    audio_dir, text_dir = save_tiny_encoders(tmp_path / "enc")
    tiny = {"audio": str(audio_dir), "text": str(text_dir), "manifest": str(write_tone_corpus(tmp_path / "data"))}
    config = tiny_config(tiny, tmp_path, epochs=1)
    config.model["speaker_norm"] = "mean+std"
    run = train(config, tmp_path / "run", progress=False)
    model = load_checkpoint(run / "best.safetensors")
    assert model.voices is not None
    fitted = model.voices
    model.voices = None
    old = tmp_path / "old.safetensors"
    save_checkpoint(model, old)
    (tmp_path / "c.yaml").write_text((run / "train_config.yaml").read_text())
    assert cli(["--config", str(tmp_path / "c.yaml"), "--fit-voices", str(old)]) == 0
    again = load_checkpoint(old)
    assert np.allclose(again.voices.matrix, fitted.matrix, atol=1e-4)  # the same data gives the same signatures
    for name, p in model.head.state_dict().items():
        assert np.array_equal(again.head.state_dict()[name].numpy(), p.numpy())  # the head is untouched
    with pytest.raises(SystemExit):
        cli(["--config", str(tmp_path / "c.yaml"), "--fit-voices", str(old), "--cv-folds", "2"])


# ---------------------------------------------------------------------- benchmark


def test_conversation_orders_keep_every_utterance_once_in_short_turns():
    from benchmarks.studies.conversation import MAX_TURN, clustering, session_order

    rng = np.random.default_rng(0)
    groups = [list(range(0, 7)), list(range(10, 15)), list(range(20, 29))]
    for order in ("interleaved", "turns"):
        session = session_order(groups, order, rng)
        assert sorted(session) == sorted(i for g in groups for i in g)
    turns = session_order(groups, "turns", rng)
    runs, current = [], [turns[0]]
    for a, b in zip(turns, turns[1:]):
        if a // 10 == b // 10:
            current.append(b)
        else:
            runs.append(current)
            current = [b]
    assert max(len(r) for r in runs) <= 2 * MAX_TURN  # one speaker's two turns only meet when the others are done
    assert clustering([0, 0, 1, 1], ["a", "a", "b", "b"]) == (1.0, 1.0)
    assert clustering([0, 0, 0, 0], ["a", "a", "b", "b"]) == (0.5, 1.0)


def test_live_command_tells_two_real_speakers_apart(tmp_path, ravdess_dir):
    """The product path: the shipped model's bundle, `memocmt-live` over two RAVDESS actors (a man
    and a woman, never seen in training) taking turns."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import json
    import subprocess
    import sys

    import soundfile as sf

    from memocmt.audio import SAMPLE_RATE, load_audio
    from memocmt.model import load_checkpoint
    from memocmt.onnx.export import export_bundle
    from memocmt.runtime import shipped_checkpoint

    checkpoint = shipped_checkpoint()
    if checkpoint is None:
        pytest.skip("no shipped model in this install")
    bundle = export_bundle(load_checkpoint(checkpoint), tmp_path / "bundle").path
    clips = {actor: sorted((ravdess_dir / f"Actor_{actor}").glob("*"))[:12:2] for actor in ("17", "18")}
    turns = ["17", "17", "18", "17", "18", "18", "17", "18", "17", "17", "18", "18"]
    parts, gap = [], np.zeros(SAMPLE_RATE, dtype=np.float32)
    for k, actor in enumerate(turns):
        parts += [load_audio(clips[actor][k // 2]), gap]
    sf.write(tmp_path / "talk.wav", np.concatenate(parts), SAMPLE_RATE)
    result = subprocess.run(
        [sys.executable, "-m", "memocmt.live.cli", "--input", str(tmp_path / "talk.wav"), "--fast",
         "--model", str(bundle), "--jsonl", "-"],
        capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    records = [r for r in map(json.loads, result.stdout.decode().splitlines()) if r["type"] == "utterance"]
    assert len(records) == len(turns) and all(r["speaker_tracking"] for r in records)
    voices = [r["speaker"] for r in records]
    by_actor = {actor: [v for v, a in zip(voices, turns) if a == actor] for actor in ("17", "18")}
    main = {actor: max(set(v), key=v.count) for actor, v in by_actor.items()}
    assert main["17"] != main["18"]
    assert sum(v == main[a] for v, a in zip(voices, turns)) >= len(turns) - 1
    assert "S1" in result.stderr.decode() and "S2" in result.stderr.decode()  # the view names the voices


class _VoicePredictor:
    """A speaker_norm predictor over the synthetic voices: an utterance's statistics come from its
    length (the index into `stats`); it predicts class 1 when the pooled mean is above the utterance's own."""

    labels = ["neutral", "angry"]
    speaker_norm = "mean+std"

    def __init__(self, stats, voices):
        self.stats, self.voices = stats, voices
        self.speaker_prior = pool_stats(stats)

    def audio_stats(self, audios):
        return np.stack([self.stats[a.size // 160 - 10] for a in audios])

    def predict_batch(self, audios, texts, speaker_stats=None):
        from memocmt.results import Prediction

        own = self.audio_stats(audios)[:, 0].mean(axis=(1, 2))
        pooled = np.asarray(speaker_stats)[:, 0].mean(axis=(1, 2))
        return [Prediction.from_probabilities(self.labels, [0.3, 0.7] if p > o else [0.7, 0.3]) for o, p in zip(own, pooled)]


def test_conversation_benchmark_compares_the_three_windows(tmp_path):
    import soundfile as sf

    from benchmarks.studies.conversation import run, to_markdown
    from memocmt.manifest import Manifest, Utterance

    stats, speakers = voices_corpus(n_speakers=4, per_speaker=4)
    voices = VoiceProjection.fit(*voices_corpus(), dims=20)
    items = []
    for i, speaker in enumerate(speakers):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.full(160 * (10 + i), 0.01, np.float32), 16000)
        items.append(Utterance(audio=path, text="", label=["neutral", "angry"][i % 2], speaker=speaker, split="test"))
    result = run(_VoicePredictor(stats, voices), Manifest.from_items(items, ["neutral", "angry"]), n_sessions=6)
    rows = result["rows"]
    assert result["methods"] == ["shared", "tracker", "oracle"] and len(rows) == 6
    alone = [r for r in rows if r["speakers"] == 1]
    assert all(r["shared"] == r["oracle"] and r["sessions"] == 4 and r["utterances"] == 16 for r in alone)
    pairs = [r for r in rows if r["speakers"] == 2]
    assert all(r["sessions"] == 6 and r["utterances"] == 48 for r in pairs)  # every pair of the 4 speakers once
    assert all(0 < r["purity"] <= 1 and 0 < r["coverage"] <= 1 for r in rows)
    text = to_markdown({**result, "model": "m", "classes": 2, "machine": "here", "seconds": 1.0})
    assert "| 2 | turns | 6 | 48 |" in text


def test_a_voice_heard_once_takes_a_same_voice_utterance_a_well_known_voice_would_not():
    from memocmt.speakers import CENTROID_REF_UTTERANCES

    dims = 4
    voices = VoiceProjection(center=np.zeros(2 * dims, np.float32), matrix=np.eye(2 * dims, dims, dtype=np.float32),
                             threshold=1.0)

    def stats(signature):  # (2, L=2, D=dims): the signature is the first layer's mean
        out = np.ones((2, 2, dims), np.float32)
        out[0, 0], out[0, 1] = signature, 0.0
        return out

    near = np.full(dims, 1.2, np.float32)  # 1.2 from the origin: over the threshold, within its widening for n=1
    young = SpeakerTracker(voices)
    assert [young.update(stats(s))[1] for s in (np.zeros(dims, np.float32), near)] == [0, 0]
    known = SpeakerTracker(voices)
    for _ in range(CENTROID_REF_UTTERANCES):
        known.update(stats(np.zeros(dims, np.float32)))
    assert known.update(stats(near))[1] == 1  # a centroid of 20 utterances is sure enough to refuse it
    far = np.full(dims, 2.0, np.float32)
    assert SpeakerTracker(voices).update(stats(np.zeros(dims, np.float32)))[1] == 0
    fresh = SpeakerTracker(voices)
    fresh.update(stats(np.zeros(dims, np.float32)))
    assert fresh.update(stats(far))[1] == 1  # well beyond even the widened threshold: a new voice


def test_an_uncommitted_utterance_leaves_the_session_as_it_was():
    stats, speakers = voices_corpus(n_speakers=4, per_speaker=6)
    voices = VoiceProjection.fit(stats, speakers, dims=10)
    for projection in (voices, None):
        tracker, twin = SpeakerTracker(projection, window=3), SpeakerTracker(projection, window=3)
        for i in range(4):
            tracker.update(stats[i])
            twin.update(stats[i])
        peek = tracker.update(stats[10], commit=False)
        assert len(tracker) == len(twin)
        real = tracker.update(stats[10])
        assert np.allclose(peek[0], real[0]) and peek[1] == real[1]
        assert np.allclose(tracker.update(stats[11])[0], (twin.update(stats[10]), twin.update(stats[11]))[1][0])
