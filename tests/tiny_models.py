"""Tiny random configs of the real encoder architectures, saved as local model directories.

They load through exactly the code path a hub id or local checkpoint takes. The audio front end
keeps the real total stride (320 samples per frame), so frame counts and export shapes are realistic.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a i you we it is are was not so very am happy sad angry calm glad upset open door kids dogs talking "
    "sitting by love hate great awful oh honestly cannot believe did that to me again after everything agreed on "
    "yesterday evening hello warm up . , ! ?"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_audio(path: Path, kind: str = "hubert", norm: str = "group") -> Path:
    """A 2-layer, 32-d HuBERT or wav2vec2; `norm="layer"` gives the padding-aware front end."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config_cls, model_cls = {"hubert": (HubertConfig, HubertModel), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model)}[kind]
    torch.manual_seed(0)
    config = config_cls(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(32, 32, 32),
        conv_stride=(10, 8, 4), conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
    )
    model_cls(config).save_pretrained(path)
    if norm == "layer":  # such models normalise their input waveform, as wav2vec2-large does
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(path)
    return path


def save_tiny_bert(path: Path) -> Path:
    """A 2-layer, 32-d BERT with a fast word-piece tokenizer over WORDS."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if (path / "tokenizer.json").is_file():
        return path
    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(path)
    return path


def save_tiny_hubert(path: Path) -> Path:
    return save_tiny_audio(path, "hubert", "group")


def save_tiny_wav2vec2(path: Path) -> Path:
    return save_tiny_audio(path, "wav2vec2", "layer")


def build_tiny_model(root: Path, audio: str = "hubert", modalities: str = "both", norm: str = "group",
                     speaker_norm: str = "none"):
    """A MemoCMT over tiny random encoders saved under `root`, in eval mode."""
    from memocmt.config import MemoCMTConfig
    from memocmt.model import MemoCMT

    audio_dir = save_tiny_audio(root / f"{audio}-{norm}", audio, norm)
    text_dir = save_tiny_bert(root / "bert")
    config = MemoCMTConfig(audio_encoder=str(audio_dir), text_encoder=str(text_dir), d_model=32, n_heads=2,
                           head_dims=[16], modalities=modalities, layer_mix=True, max_text_tokens=24,
                           speaker_norm=speaker_norm)
    return MemoCMT(config).eval()
