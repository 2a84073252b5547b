"""The GE2E voice encoder in PyTorch, its export to ONNX, and the check of one against the other.

`Ge2eEncoder` is built here and the wheel's state dict is copied into it name by name under a
shape check (the wheel's own module is never imported: it pulls librosa and webrtcvad). The
graph takes partial-utterance mel spectrograms (memocmt.voice_frontend.partial_mels) and returns unit
embeddings; `export_voice_graph` writes it, compares ONNX Runtime with PyTorch on generated and
speech-like inputs (`verify_voice_graph`, max abs difference) and only then moves it into place.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import voice_frontend as voice
from .export import ExportError, pin_ir_version
from .verify import ExportValidationError

logger = logging.getLogger("memocmt")

OPSET = 17
MAX_ABS_DIFF = 1e-4  # allowed on unit embeddings (float32 LSTM, 160 steps)


class Ge2eEncoder(nn.Module):
    """(B, frames, n_mels) power mels -> (B, n_embed) unit embeddings: the last layer's final hidden
    state through a linear layer and a ReLU, L2-normalised."""

    def __init__(self, n_mels: int, n_hidden: int, n_layers: int, n_embed: int):
        super().__init__()
        self.n_mels = n_mels
        self.lstm = nn.LSTM(n_mels, n_hidden, n_layers, batch_first=True)
        self.linear = nn.Linear(n_hidden, n_embed)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        assert mels.shape[-1] == self.n_mels, f"expected {self.n_mels} mel bands, got {mels.shape[-1]}"
        _, (hidden, _) = self.lstm(mels)
        embeds = torch.relu(self.linear(hidden[-1]))
        return embeds / torch.linalg.vector_norm(embeds, dim=1, keepdim=True).clamp_min(1e-12)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "Ge2eEncoder":
        """The wheel's pretrained.pt ({"model_state": ...}); its GE2E similarity scale and bias are not needed."""
        try:
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
            state = checkpoint["model_state"]
        except Exception as e:  # torch raises many types for a damaged file
            raise ExportError(f"Cannot read the voice encoder weights {path}: {e}") from e
        model = cls(voice.N_MELS, voice.EMBED_DIMS, 3, voice.EMBED_DIMS)
        ours = model.state_dict()
        for name, tensor in ours.items():
            if name not in state:
                raise ExportError(f"The voice encoder weights {path} lack {name}.")
            if tuple(state[name].shape) != tuple(tensor.shape):
                raise ExportError(f"{name} in {path} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)}.")
            with torch.no_grad():
                tensor.copy_(state[name])
        return model.eval()


def verification_inputs(seed: int = 0) -> list[np.ndarray]:
    """Encoder inputs from generated audio: a voiced harmonic sweep, noise, and near silence; 1-3 partials."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(3.2 * voice.SAMPLE_RATE)) / voice.SAMPLE_RATE
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t)
    harmonic = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / voice.SAMPLE_RATE) / k for k in range(1, 12))
    clips = [0.2 * harmonic * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)), 0.05 * rng.standard_normal(len(t)),
             1e-4 * rng.standard_normal(int(1.0 * voice.SAMPLE_RATE))]
    return [voice.partial_mels(np.asarray(c, dtype=np.float32)) for c in clips]


def verify_voice_graph(model: Ge2eEncoder, path: Path, tolerance: float = MAX_ABS_DIFF) -> float:
    """Max abs difference between ONNX Runtime and PyTorch embeddings; raises ExportValidationError above tolerance."""
    from ..providers import choose_providers, create_session

    session = create_session(path, choose_providers("cpu"), threads=1)
    worst = 0.0
    for mels in verification_inputs():
        ours = session.run([voice.OUTPUT_NAME], {voice.INPUT_NAME: mels})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(mels)).numpy()
        if ours.shape != ref.shape:
            raise ExportValidationError(f"The ONNX voice encoder gives shape {ours.shape}, PyTorch {ref.shape}.")
        worst = max(worst, float(np.abs(ours - ref).max()))
    logger.info("voice encoder: ONNX vs PyTorch max abs diff %.2e", worst)
    if not worst <= tolerance:
        raise ExportValidationError(f"The ONNX voice encoder differs from PyTorch by {worst:.2e} (> {tolerance:.0e}).")
    return worst


def export_voice_graph(weights: str | os.PathLike, out: str | os.PathLike) -> float:
    """Export the wheel's encoder to `out` (ONNX), verified; returns the max abs difference to PyTorch.
    The file appears only once verified (written beside it, then renamed)."""
    out = Path(out)
    model = Ge2eEncoder.from_checkpoint(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(handle)
    staging = Path(staging)
    try:
        example = torch.zeros(2, voice.PARTIAL_FRAMES, voice.N_MELS)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on the LSTM; the graph is verified on 1-3 partials below
                torch.onnx.export(model, (example,), str(staging), dynamo=False, opset_version=OPSET,
                                  input_names=[voice.INPUT_NAME], output_names=[voice.OUTPUT_NAME],
                                  dynamic_axes={voice.INPUT_NAME: {0: "partials", 1: "frames"},
                                                voice.OUTPUT_NAME: {0: "partials"}})
        except Exception as e:  # the exporter raises many types
            raise ExportError(f"Cannot export the voice encoder to ONNX opset {OPSET}: {e}") from e
        pin_ir_version(staging, OPSET)
        diff = verify_voice_graph(model, staging)
        os.replace(staging, out)
        return diff
    finally:
        staging.unlink(missing_ok=True)
