"""The text-language fallback: a late fusion that reads transcripts in its trained languages only, and classifies
an utterance in another known language from its audio alone, in PyTorch, in the ONNX bundle and live."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memocmt.language_policy import has_audio_fallback, reads_text, trained_languages
from memocmt.model import load_checkpoint, save_checkpoint
from tests.test_ensemble import TEXTS, _clips, _probs, members  # noqa: F401  (module fixture)


def test_rule():
    assert reads_text(["en", "pl"], "pl") and reads_text(["en"], "EN") and not reads_text(["en"], "de")
    assert reads_text(["en"], None) and reads_text(["en"], "")  # an unknown language reads the transcript
    assert reads_text([], "de")  # no list: every language
    assert trained_languages(["en", "pl", "", "en", " PL "]) == ["en", "pl"]
    assert has_audio_fallback({"text_languages": ["en"], "members": [{}, {}], "modalities": "both"})
    assert not has_audio_fallback({"text_languages": [], "members": [{}, {}], "modalities": "both"})
    assert not has_audio_fallback({"modalities": "both"})  # an older bundle's config


def test_a_single_fusion_head_cannot_fall_back():
    from memocmt.config import preset

    with pytest.raises(ValueError, match="text_languages needs a way to classify without text"):
        preset("edge", text_languages=["en"])
    assert preset("edge", modalities="audio", text_languages=["en"]).text_languages == ["en"]


def test_foreign_language_uses_the_audio_only_members(members, tmp_path):  # noqa: F811
    pytest.importorskip("onnxruntime")
    from memocmt.ensemble import build_ensemble
    from memocmt.live.pipeline import BundleEmotionModel
    from memocmt.onnx.export import export_bundle
    from memocmt.runtime import load_bundle

    _, paths = members
    ensemble = build_ensemble(paths)
    ensemble.config = ensemble.config.replace(text_languages=["en"])
    loaded = load_checkpoint(save_checkpoint(ensemble, tmp_path / "late.safetensors"))
    assert loaded.config.text_languages == ["en"]
    clips = _clips()
    audio_only = _probs(load_checkpoint(paths[1]).predict_batch(clips, None))  # the audio-only member alone
    fused = _probs(ensemble.predict_batch(clips, TEXTS))
    batch = loaded.prepare(clips, TEXTS)
    with torch.inference_mode():
        states, lengths = loaded.encode_audio(batch.audio_features, batch.audio_lengths)
        ours = torch.softmax(loaded.head.audio_logits(states, lengths), dim=-1).numpy()
    assert np.allclose(ours, audio_only, atol=1e-5) and not np.allclose(ours, fused, atol=1e-3)

    result = export_bundle(loaded, tmp_path / "bundle")  # verified against PyTorch, the audio-only output included
    assert result.manifest["parity"]["max_abs_diff_audio_logits"] < 1e-3
    bundle = load_bundle(result.path, "cpu")
    assert bundle.audio_fallback and bundle.text_languages == ["en"]
    assert bundle.reads_text("en") and bundle.reads_text(None) and not bundle.reads_text("pl")
    audio, text = bundle.encode(clips, TEXTS)
    english = bundle.classify_batch(audio, text, language="en")
    polish = bundle.classify_batch(audio, text, language="pl")
    assert np.allclose(_probs(english), fused, atol=1e-3) and all(p.read_text for p in english)
    assert np.allclose(_probs(polish), audio_only, atol=1e-3) and not any(p.read_text for p in polish)

    live = BundleEmotionModel(bundle, "late", track_speakers=False)  # the live pipeline's model passes the language on
    said = live.predict(clips[0], TEXTS[0], language="pl")
    assert said.read_text is False and said.to_dict()["read_text"] is False
    assert live.predict(clips[0], TEXTS[0], language="en").read_text is True

    plain = load_bundle(export_bundle(load_checkpoint(paths[0]), tmp_path / "plain").path, "cpu")
    assert not plain.audio_fallback and plain.reads_text("pl")  # without text_languages every transcript is read
    with pytest.raises(ValueError, match="no audio-only output"):
        plain.logits(*plain.encode(clips[:1], TEXTS[:1]), read_text=False)


def test_server_batches_give_each_utterance_its_own_language(members, tmp_path):  # noqa: F811
    """memocmt-serve's fusion batches mix utterances of every session and language: each gets what the bundle
    gives it alone in its language, a foreign one from the audio-only members, fresh or kept for hindsight."""
    pytest.importorskip("onnxruntime")
    import asyncio

    from memocmt.ensemble import build_ensemble
    from memocmt.onnx.export import export_bundle
    from memocmt.runtime import load_bundle
    from memocmt.serve.engine import BundleBackend, Engine, FusionItem
    from memocmt.speaker_norm import pool_stats

    _, paths = members
    ensemble = build_ensemble(paths)
    ensemble.config = ensemble.config.replace(text_languages=["en", "pl"])
    bundle = load_bundle(export_bundle(ensemble, tmp_path / "bundle").path, "cpu")
    backend = BundleBackend(bundle)
    clips = _clips()
    audio, text = backend.encode_audio_batch(clips), backend.encode_text_batch(TEXTS)
    stats = [pool_stats(backend.audio_stats(a), bundle.speaker_prior)[None] for a in audio]
    languages = ["en", "de", None]
    items = [FusionItem(a, t, s, lang) for a, t, s, lang in zip(audio, text, stats, languages)]
    batched = backend.classify_batch(items)
    alone = [bundle.classify(*item) for item in items]
    assert np.allclose(_probs(batched), _probs(alone), atol=1e-5)
    assert [p.read_text for p in batched] == [True, False, True]
    german = _probs(batched[1:2])
    assert np.allclose(german, _probs([bundle.classify(audio[1], text[1], stats[1], "fr")]), atol=1e-6)  # audio only
    assert not np.allclose(german, _probs([bundle.classify(audio[1], text[1], stats[1], "en")]), atol=1e-3)
    held = backend.classify_batch([item._replace(audio=backend.hold(item.audio)) for item in items])
    assert [p.read_text for p in held] == [True, False, True]  # hindsight's float16 copies, the same policy

    engine = Engine(backend, None)
    try:
        again = asyncio.run(engine.classify_again(audio[1], text[1], stats[1], "de"))
    finally:
        engine.close()
    assert again.read_text is False and np.allclose(_probs([again]), german, atol=1e-5)


def test_evaluation_classifies_foreign_rows_from_audio_as_live_does(members, tmp_path):  # noqa: F811
    """memocmt-eval applies the policy per row: a manifest row in a language the head does not read is scored
    from the audio-only members, in PyTorch as in the ONNX bundle."""
    import soundfile as sf

    from memocmt.ensemble import build_ensemble
    from memocmt.evaluate import evaluate_manifest
    from memocmt.manifest import Manifest, Utterance

    _, paths = members
    ensemble = build_ensemble(paths)
    ensemble.config = ensemble.config.replace(text_languages=["en"])
    clips = _clips()
    rows = []
    for i, (clip, text) in enumerate(zip(clips, TEXTS)):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, clip, 16000)
        rows.append(Utterance(path, text, ensemble.labels[0], f"s{i}", "test", id=f"c{i}",
                              language="en" if i % 2 else "de"))
    result = evaluate_manifest(ensemble, Manifest.from_items(rows, ensemble.labels), batch_size=len(rows))
    audio_only = _probs(load_checkpoint(paths[1]).predict_batch(clips, None))
    fused = _probs(ensemble.predict_batch(clips, TEXTS))
    for i, probs in enumerate(result.probabilities):
        assert np.allclose(probs, (fused if i % 2 else audio_only)[i], atol=1e-4), i
    assert ensemble.reads_text("en") and not ensemble.reads_text("de") and ensemble.reads_text(None)
