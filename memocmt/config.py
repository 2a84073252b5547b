"""Model dimensions and encoder names, stored inside every checkpoint and ONNX bundle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

IEMOCAP_4 = ("angry", "happy", "sad", "neutral")


@dataclass
class MemoCMTConfig:
    audio_encoder: str = "whisper-tiny.en"  # built-in name, local directory or hub id
    text_encoder: str = "minilm-l6"  # built-in name, local directory or hub id
    labels: list[str] = field(default_factory=lambda: list(IEMOCAP_4))  # class names, logit order
    modalities: str = "both"  # both | audio | text (the paper's ablations)
    d_model: int = 384  # width of the cross-modal transformer
    n_heads: int = 8  # attention heads per branch
    head_dims: list[int] = field(default_factory=lambda: [128])  # MLP hidden sizes before the classifier
    dropout: float = 0.1
    pooling: str = "mean"  # cls | mean | max | min; a "+stats" suffix adds per-layer mean+std of the audio states
    layer_mix: bool = False  # learn a softmax-weighted sum of encoder layers instead of the last one
    residual: bool = False  # add each branch's queries back before its LayerNorm (the paper's branch has none)
    audio_layer_concat: bool = False  # feed all audio encoder layers side by side (LayerNorm + linear) instead of a mix
    # none | mean | mean+std: centre (and scale) the audio states on their speaker's statistics over
    # that speaker's utterances, without labels (memocmt.speaker_norm); an unknown speaker is the utterance itself
    speaker_norm: str = "none"
    freeze_audio: bool = True  # the paper keeps both encoders frozen
    freeze_text: bool = True
    max_text_tokens: int = 128
    # How recorded clips are cut before the audio encoder in training and evaluation: "none" (as
    # recorded) or "vad" (as the live segmenter cuts speech, memocmt.live.vad.trim_to_speech), so
    # that speaker statistics, voice signatures and the prior match live segments.
    trim: str = "none"
    # Temperature the logits are divided by (memocmt.calibration: fitted on held-out
    # cross-validation predictions after training; 1.0 = as trained). An ensemble's members keep
    # their own, applied before their probabilities multiply.
    temperature: float = 1.0
    # Filled in from the encoders when the model is built; lets the head be rebuilt alone.
    audio_hidden_size: int = 0
    audio_num_layers: int = 0
    text_hidden_size: int = 0
    text_num_layers: int = 0
    # An ensemble (late fusion, memocmt.ensemble): the member heads' own configs; their class
    # probabilities multiply. Empty for a single head, whose settings are the fields above.
    members: list[dict] = field(default_factory=list)
    # Languages whose transcripts the head reads (codes such as "en", "pl"): an utterance whose language is known
    # and not among them is classified from its audio alone, by the audio-only members of a late fusion
    # (memocmt.language_policy). Empty: every transcript is read, whatever its language.
    text_languages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"The temperature must be positive, not {self.temperature}.")
        if self.text_languages and self.modalities == "both" and \
                not any(m.get("modalities") == "audio" for m in self.members):
            raise ValueError("text_languages needs a way to classify without text: a late fusion with an audio-only "
                             "member (memocmt.ensemble).")
        if self.trim not in ("none", "vad"):
            raise ValueError(f"Unknown trim {self.trim!r}; choose none or vad.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MemoCMTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown model config fields {sorted(unknown)}; this checkpoint needs a newer memocmt.")
        for member in data.get("members", []):
            if cls.from_dict(member).members:
                raise ValueError("An ensemble member cannot itself be an ensemble.")
        return cls(**data)

    def member_configs(self) -> list["MemoCMTConfig"]:
        return [MemoCMTConfig.from_dict(m) for m in self.members]

    def replace(self, **changes) -> "MemoCMTConfig":
        return replace(self, **changes)


PRESETS: dict[str, MemoCMTConfig] = {
    # The paper's model: HuBERT-base + BERT-base, 768-d, 8 heads, one 128-unit MLP layer.
    "paper": MemoCMTConfig(
        audio_encoder="facebook/hubert-base-ls960",
        text_encoder="bert-base-uncased",
        d_model=768,
        n_heads=8,
        head_dims=[128],
        pooling="min",
        layer_mix=False,
    ),
    # Offline default: Whisper tiny.en encoder + MiniLM-L6, both shipped in PyPI wheels; the head
    # sizes are the ones chosen on RAVDESS validation actors for the shipped model.
    "edge": MemoCMTConfig(
        audio_encoder="whisper-tiny.en",
        text_encoder="minilm-l6",
        d_model=128,
        n_heads=8,
        head_dims=[128],
        dropout=0.2,
        pooling="max",
        layer_mix=True,
        residual=True,
    ),
    # The edge head over the multilingual Whisper base encoder (512-d, 6 layers; its model.bin is
    # assembled from two wheels, memocmt.wheel_models) + MiniLM-L6: for speech in other languages.
    "edge-base": MemoCMTConfig(
        audio_encoder="whisper-base",
        text_encoder="minilm-l6",
        d_model=128,
        n_heads=8,
        head_dims=[128],
        dropout=0.2,
        pooling="max",
        layer_mix=True,
        residual=True,
    ),
}


def preset(name: str, **overrides) -> MemoCMTConfig:
    """A copy of a named preset with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return MemoCMTConfig.from_dict({**PRESETS[name].to_dict(), **overrides})
