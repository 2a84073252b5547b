"""MemoCMT: encoders + cross-modal fusion head, and its checkpoints.

    from memocmt.model import MemoCMT
    model = MemoCMT.from_preset("edge")          # real pretrained encoders, no network
    prediction = model.predict(audio, "I can't believe you did that")

Checkpoints are safetensors files: the config as JSON metadata, the head's weights (and the
encoders' only when they were fine-tuned). Loading never executes code.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .audio import check_audio
from .config import MemoCMTConfig, preset
from .encoders import AudioEncoder, TextEncoder, load_audio_encoder, load_text_encoder
from .features import extract_features, pad_batch
from .fusion import EnsembleHead, FusionHead
from .language_policy import has_audio_fallback, reads_text
from .results import Prediction
from .speakers import VoiceProjection

logger = logging.getLogger("memocmt")

CHECKPOINT_FORMAT = "memocmt-checkpoint"
CHECKPOINT_VERSION = 1


class Encoding(NamedTuple):
    """One modality's encoder output for a batch: states (B, L, T, D) and valid lengths (B,)."""

    states: torch.Tensor
    lengths: torch.Tensor


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded as this model."""


@dataclass
class Batch:
    """Model inputs for a padded batch; any modality may be absent."""

    audio_features: torch.Tensor | None = None  # (B, n_mels, T) or (B, samples)
    audio_lengths: torch.Tensor | None = None  # (B,) valid feature frames / samples
    input_ids: torch.Tensor | None = None  # (B, tokens)
    text_mask: torch.Tensor | None = None  # (B, tokens), 1 at real tokens
    speaker_stats: torch.Tensor | None = None  # (B, 2, L, D) speaker statistics of a speaker_norm model

    def to(self, device) -> "Batch":
        return Batch(*(None if t is None else t.to(device) for t in
                       (self.audio_features, self.audio_lengths, self.input_ids, self.text_mask, self.speaker_stats)))


class MemoCMT(nn.Module):
    """The paper's model with optional modalities; forward(batch) returns logits (B, classes)."""

    def __init__(self, config: MemoCMTConfig, audio_encoder: AudioEncoder | None = None,
                 text_encoder: TextEncoder | None = None):
        super().__init__()
        self.config = config
        use_audio = config.modalities in ("both", "audio")
        use_text = config.modalities in ("both", "text")
        self.audio_encoder = audio_encoder if use_audio else None
        self.text_encoder = text_encoder if use_text else None
        if use_audio and audio_encoder is None:
            self.audio_encoder = load_audio_encoder(config.audio_encoder)
        if use_text and text_encoder is None:
            self.text_encoder = load_text_encoder(config.text_encoder)
        self._check_encoder_dims()
        if self.audio_encoder is not None and config.freeze_audio:
            self.audio_encoder.freeze()
        if self.text_encoder is not None and config.freeze_text:
            self.text_encoder.freeze()
        self.head = build_head(config)
        # Voice signatures for telling speakers apart live (memocmt.speakers): fitted on the training
        # speakers of a speaker_norm model, stored with the checkpoint; None when there are none.
        self.voices: VoiceProjection | None = None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MemoCMT":
        return cls(preset(name, **overrides))

    def _check_encoder_dims(self) -> None:
        """Fill the config's encoder dimensions, or check them against a stored config."""
        cfg = self.config
        for kind, enc in (("audio", self.audio_encoder), ("text", self.text_encoder)):
            if enc is None:
                continue
            size_field, layers_field = f"{kind}_hidden_size", f"{kind}_num_layers"
            stored = (getattr(cfg, size_field), getattr(cfg, layers_field))
            actual = (enc.hidden_size, enc.num_layers)
            if stored == (0, 0):
                setattr(cfg, size_field, actual[0])
                setattr(cfg, layers_field, actual[1])
            elif stored != actual:
                raise CheckpointError(
                    f"The model was built for a {kind} encoder with {stored[0]}-d states and {stored[1]} layers, "
                    f"but {enc.name!r} gives {actual[0]}-d and {actual[1]} layers; use the encoder it was trained with."
                )

    def train(self, mode: bool = True) -> "MemoCMT":
        super().train(mode)
        # Frozen encoders stay in eval mode (no dropout), as they were pretrained.
        if self.audio_encoder is not None and self.config.freeze_audio:
            self.audio_encoder.eval()
        if self.text_encoder is not None and self.config.freeze_text:
            self.text_encoder.eval()
        return self

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    # ------------------------------------------------------------------ inputs

    def prepare(self, audios: list[np.ndarray] | None, texts: list[str] | None) -> Batch:
        """Validate, featurise, tokenize and pad raw inputs (float32 16 kHz mono audio, strings)."""
        batch = Batch()
        if self.audio_encoder is not None:
            if audios is None:
                raise ValueError("This model uses audio; pass the utterances' audio.")
            batch.audio_features, batch.audio_lengths = self._audio_features(audios)
        if self.text_encoder is not None:
            if texts is None:
                raise ValueError("This model uses text; pass the utterances' transcripts.")
            if not all(isinstance(t, str) for t in texts):
                raise ValueError("Transcripts must be strings (use '' when nothing was said).")
            batch.input_ids, batch.text_mask = self.text_encoder.tokenize(texts, self.config.max_text_tokens)
        return batch

    def _audio_features(self, audios: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.audio_encoder.feature_spec
        feats = [extract_features(check_audio(a, name=f"audio[{i}]"), spec) for i, a in enumerate(audios)]
        padded, lengths = pad_batch(feats)
        return torch.from_numpy(padded), torch.from_numpy(lengths)

    # ------------------------------------------------------------------ compute

    def encode_audio(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_audio):
            return self.audio_encoder(features, lengths)

    def encode_text(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text):
            return self.text_encoder(input_ids, mask), mask.sum(dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        audio_states = audio_lengths = text_states = text_lengths = None
        if self.audio_encoder is not None:
            audio_states, audio_lengths = self.encode_audio(batch.audio_features, batch.audio_lengths)
        if self.text_encoder is not None:
            text_states, text_lengths = self.encode_text(batch.input_ids, batch.text_mask)
        return self.head(audio_states, audio_lengths, text_states, text_lengths, batch.speaker_stats)

    @property
    def speaker_norm(self) -> str:
        """"mean" or "mean+std" when predictions take speaker statistics (memocmt.speaker_norm), else ""."""
        return self.head.speaker_norm

    @property
    def trim(self) -> str:
        """How recorded clips are cut before this model sees them (MemoCMTConfig.trim)."""
        return self.config.trim

    @property
    def speaker_prior(self) -> np.ndarray | None:
        """(2, L, D) prior statistics of a speaker_norm model (those of its training utterances), else None."""
        return self.head.speaker_prior.detach().cpu().float().numpy() if self.speaker_norm else None

    @torch.inference_mode()
    def audio_stats(self, audios: list[np.ndarray] | Encoding) -> np.ndarray:
        """(B, 2, L, D) mean and variance of every audio encoder layer per utterance (raw audio or its
        encoding): what speaker statistics pool."""
        from .fusion import utterance_stats

        if self.audio_encoder is None:
            raise ValueError("This is a text-only model; it has no audio states.")
        if not isinstance(audios, Encoding):
            features, lengths = self._audio_features(audios)
            audios = Encoding(*self.encode_audio(features.to(self.device), lengths.to(self.device)))
        return utterance_stats(audios.states.float(), audios.lengths).cpu().numpy()

    @torch.inference_mode()
    def encode(self, audios: list[np.ndarray] | None, texts: list[str] | None) -> tuple[Encoding | None, Encoding | None]:
        """Encoder states of a batch, per modality (None for one the model does not use): the part
        of `predict_batch` that `classify_batch` does not repeat (as runtime.Bundle.encode)."""
        if audios is not None and texts is not None and len(audios) != len(texts):
            raise ValueError(f"Got {len(audios)} audio clips but {len(texts)} transcripts.")
        with self._eval_mode():
            batch = self.prepare(audios, texts).to(self.device)
            audio = text = None
            if self.audio_encoder is not None:
                audio = Encoding(*self.encode_audio(batch.audio_features, batch.audio_lengths))
            if self.text_encoder is not None:
                text = Encoding(*self.encode_text(batch.input_ids, batch.text_mask))
        return audio, text

    def reads_text(self, language: str | None) -> bool:
        """Whether the transcript of an utterance in `language` ("" or None: unknown) is read, or the utterance is
        classified by the late fusion's audio-only members (memocmt.language_policy), as the ONNX bundle does."""
        return not has_audio_fallback(self.config) or reads_text(self.config.text_languages, language)

    @torch.inference_mode()
    def classify_batch(self, audio: Encoding | None, text: Encoding | None,
                       speaker_stats: np.ndarray | None = None, language: str | None = None) -> list[Prediction]:
        """Predictions from a batch's encodings; `speaker_stats` (B, 2, L, D) as in `predict_batch`. With a
        `language` the model does not read (see reads_text), from the audio alone."""
        stats = None
        if speaker_stats is not None and self.speaker_norm:
            stats = torch.as_tensor(np.asarray(speaker_stats, dtype=np.float32)).to(self.device)
        read_text = self.reads_text(language)
        with self._eval_mode():
            if read_text:
                logits = self.head(*(audio if audio is not None else (None, None)),
                                   *(text if text is not None else (None, None)), stats)
            else:
                logits = self.head.audio_logits(*audio, stats)
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        predictions = [Prediction.from_probabilities(self.labels, p) for p in probs]
        for prediction in predictions:
            prediction.read_text = read_text and self.config.modalities in ("both", "text")
        return predictions

    def predict_batch(self, audios: list[np.ndarray] | None, texts: list[str] | None,
                      speaker_stats: np.ndarray | None = None) -> list[Prediction]:
        """Predictions for a batch; `speaker_stats` (B, 2, L, D) are the speakers' statistics for a
        speaker_norm model (default: each utterance's own with the prior)."""
        return self.classify_batch(*self.encode(audios, texts), speaker_stats)

    @contextmanager
    def _eval_mode(self):
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def predict(self, audio: np.ndarray | None, text: str | None) -> Prediction:
        """Emotion of one utterance: float32 16 kHz mono audio in [-1, 1] and its transcript."""
        return self.predict_batch(None if audio is None else [audio], None if text is None else [text])[0]


def build_head(config: MemoCMTConfig) -> FusionHead | EnsembleHead:
    """The fusion head alone, from a config whose encoder dimensions are filled in."""
    if config.members:
        return EnsembleHead([build_head(member) for member in config.member_configs()], config.temperature)
    uses_audio = config.modalities in ("both", "audio")
    uses_text = config.modalities in ("both", "text")
    if (uses_audio and not config.audio_hidden_size) or (uses_text and not config.text_hidden_size):
        raise ValueError("The config lacks encoder dimensions; build the full model once to fill them in.")
    return FusionHead(
        audio_dim=config.audio_hidden_size,
        text_dim=config.text_hidden_size,
        audio_layers=config.audio_num_layers,
        text_layers=config.text_num_layers,
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_classes=len(config.labels),
        head_dims=tuple(config.head_dims),
        dropout=config.dropout,
        pooling=config.pooling,
        modalities=config.modalities,
        layer_mix=config.layer_mix,
        residual=config.residual,
        audio_layer_concat=config.audio_layer_concat,
        speaker_norm=config.speaker_norm,
        temperature=config.temperature,
    )


# ---------------------------------------------------------------------- checkpoints


def checkpoint_tensors(model: MemoCMT) -> dict[str, torch.Tensor]:
    """What a checkpoint stores: the head, plus any encoder that was fine-tuned."""
    keep = ["head."]
    if model.audio_encoder is not None and not model.config.freeze_audio:
        keep.append("audio_encoder.")
    if model.text_encoder is not None and not model.config.freeze_text:
        keep.append("text_encoder.")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(tuple(keep))}
    if model.voices is not None:
        tensors.update({"voices.center": torch.from_numpy(model.voices.center),
                        "voices.matrix": torch.from_numpy(model.voices.matrix),
                        "voices.threshold": torch.tensor(float(model.voices.threshold), dtype=torch.float64)})
    return tensors


def save_checkpoint(model: MemoCMT, path: str | Path, extra: dict | None = None) -> Path:
    """Write the model to a safetensors file, atomically (a crash never leaves half a file)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": str(CHECKPOINT_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "extra": json.dumps(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(checkpoint_tensors(model), str(tmp), metadata=metadata)
    if path.is_file():  # rewriting a checkpoint keeps its permissions
        shutil.copymode(path, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> tuple[MemoCMTConfig, dict[str, torch.Tensor], dict]:
    """Config, tensors and extra metadata of a checkpoint, without building encoders."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a MemoCMT checkpoint (safetensors file): {e}") from e
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a MemoCMT checkpoint.")
    if int(metadata.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by a newer memocmt (format {metadata['version']}); upgrade to load it.")
    config = MemoCMTConfig.from_dict(json.loads(metadata["config"]))
    return config, tensors, json.loads(metadata.get("extra", "{}"))


def update_checkpoint_config(path: str | Path, extra: dict | None = None, **changes) -> MemoCMTConfig:
    """Rewrite a checkpoint's config fields (e.g. temperature=1.7) in place, atomically, keeping its
    tensors and adding `extra` to its metadata; no encoder is built. Returns the new config."""
    from safetensors.torch import save_file

    path = Path(path)
    config, tensors, old_extra = read_checkpoint(path)
    config = config.replace(**changes)  # dataclasses.replace runs the config's own checks
    metadata = {"format": CHECKPOINT_FORMAT, "version": str(CHECKPOINT_VERSION),
                "config": json.dumps(config.to_dict()), "extra": json.dumps({**old_extra, **(extra or {})})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    shutil.copymode(path, tmp)
    tmp.replace(path)
    return config


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> MemoCMT:
    """Rebuild the exact model a checkpoint was saved from (encoders come from their sources)."""
    config, tensors, _ = read_checkpoint(path)
    model = MemoCMT(config)
    model.voices = pop_voices(tensors, path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    head_missing = [k for k in missing if k.startswith("head.")]
    if head_missing or unexpected:
        raise CheckpointError(
            f"{path} does not match its own config (missing {head_missing[:3]}, unexpected {unexpected[:3]})."
        )
    return model.to(map_location).eval()


def pop_voices(tensors: dict[str, torch.Tensor], path: str | Path) -> VoiceProjection | None:
    """Take a checkpoint's voice signature tensors out of `tensors`; None when it has none."""
    voices = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("voices.")]}
    if not voices:
        return None
    try:
        return VoiceProjection(voices["voices.center"].numpy(), voices["voices.matrix"].numpy(),
                               float(voices["voices.threshold"]))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} has an incomplete or malformed voice projection ({e}).") from e
