"""The MemoCMT cross-modal transformer head, with padding masks.

Audio queries attend to text and text queries attend to audio (the paper's roles); each
branch is projected, layer-normed and dropped out; the two sequences are concatenated
(text first, so position 0 is the text [CLS] query), pooled over valid positions, and
classified by an MLP with LeakyReLU. With one modality the same branch runs as
self-attention over that modality: the paper's text-only and audio-only ablations.

A pooling mode with a `+stats` suffix (`max+stats`, ...) also pools the audio encoder states
directly: the mean and standard deviation over valid frames of every layer, batch-normalised
and projected to d_model, are concatenated to the pooled fused vector before the classifier
(x-vector-style statistics pooling; what a linear probe on frozen features uses).

With `speaker_norm` ("mean" or "mean+std"), the audio states are first centred on (and scaled
by) their speaker's statistics: `speaker_stats` (B, 2, L, D), the mean and variance of every
layer over that speaker's utterances (memocmt.speaker_norm). That removes much of what
identifies the voice and keeps what changes between its utterances. Without statistics each
utterance uses its own pooled with the head's prior (a speaker heard once).

`EnsembleHead` holds several such heads over the same encoders (e.g. a cross-modal head and
an audio-only one, each trained on its own) and multiplies their probabilities: late fusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .speaker_norm import PRIOR_WEIGHT, SPEAKER_NORMS

POOLINGS = ("cls", "mean", "max", "min")
STATS_SUFFIX = "+stats"  # e.g. "max+stats": also mean+std statistics of every audio layer
MODALITIES = ("both", "audio", "text")
SPEAKER_VAR_EPS = 1e-5  # added to a speaker's variance before dividing by its square root


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True at valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class LayerMix(nn.Module):
    """Softmax-weighted sum over an encoder's layers; weights start equal."""

    def __init__(self, n_layers: int, enabled: bool):
        super().__init__()
        self.n_layers = n_layers
        self.weights = nn.Parameter(torch.zeros(n_layers)) if enabled and n_layers > 1 else None

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        assert states.dim() == 4, "expected stacked hidden states (B, L, T, D)"
        if self.weights is None:
            return states[:, -1]
        assert states.shape[1] == self.n_layers, f"expected {self.n_layers} layers, got {states.shape[1]}"
        w = torch.softmax(self.weights, dim=0)
        b, n_layers, t, d = states.shape
        # (L) @ (B, L, T*D): one MatMul in the exported graph; ONNX Runtime's Einsum took 10x longer
        return torch.matmul(w.to(states.dtype), states.reshape(b, n_layers, t * d)).reshape(b, t, d)


class LayerConcat(nn.Module):
    """All layers side by side per frame: (B, L, T, D) -> (B, T, L * D)."""

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        b, n_layers, t, d = states.shape
        return states.permute(0, 2, 1, 3).reshape(b, t, n_layers * d)


class CrossAttention(nn.Module):
    """Multi-head attention of queries over keys/values with a key padding mask."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, f"d_model {d_model} must be divisible by n_heads {n_heads}"
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, query: torch.Tensor, key: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        b, tq, d = query.shape
        tk = key.shape[1]
        h = self.n_heads
        q = self.q(query).view(b, tq, h, d // h).transpose(1, 2)
        k = self.k(key).view(b, tk, h, d // h).transpose(1, 2)
        v = self.v(key).view(b, tk, h, d // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_valid[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, tq, d))


class FusionBranch(nn.Module):
    """Attention, then linear projection, LayerNorm and dropout.

    With `residual`, the queries are added back before the LayerNorm (a post-LN transformer
    sub-layer), so each branch keeps its own modality's frames as well as what it read from
    the other one; without it the branch is exactly the paper's attention -> linear -> norm.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.attn = CrossAttention(d_model, n_heads, dropout)
        self.proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        y = self.proj(self.attn(query, key, key_valid))
        if self.residual:
            y = y + query
        return self.drop(self.norm(y))


def masked_pool(x: torch.Tensor, valid: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool (B, T, D) over valid positions only: cls (position 0), mean, max or min."""
    if mode == "cls":
        return x[:, 0]
    m = valid[:, :, None]
    if mode == "mean":
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
    if mode == "max":
        return x.masked_fill(~m, float("-inf")).amax(dim=1)
    if mode == "min":
        return x.masked_fill(~m, float("inf")).amin(dim=1)
    raise ValueError(f"Unknown pooling {mode!r}; choose one of {', '.join(POOLINGS)}.")


def split_pooling(pooling: str) -> tuple[str, bool]:
    """'max+stats' -> ('max', True); 'max' -> ('max', False); unknown modes raise ValueError."""
    base, stats = (pooling[: -len(STATS_SUFFIX)], True) if pooling.endswith(STATS_SUFFIX) else (pooling, False)
    if base not in POOLINGS:
        choices = ", ".join([*POOLINGS, *(p + STATS_SUFFIX for p in POOLINGS)])
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {choices}.")
    return base, stats


def utterance_stats(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, L, T, D) states -> (B, 2, L, D) mean and variance of every layer over each utterance's valid frames."""
    m = lengths_to_mask(lengths, states.shape[2])[:, None, :, None].to(states.dtype)  # (B, 1, T, 1)
    n = m.sum(dim=2).clamp(min=1)
    mean = (states * m).sum(dim=2) / n
    var = (((states - mean[:, :, None]) * m) ** 2).sum(dim=2) / n
    return torch.stack([mean, var], dim=1)


def pool_with_prior(stats: torch.Tensor, prior: torch.Tensor, prior_weight: float = PRIOR_WEIGHT) -> torch.Tensor:
    """(B, 2, L, D) statistics of one utterance each, pooled with a (2, L, D) prior worth `prior_weight` utterances."""
    a = prior_weight / (prior_weight + 1.0)
    mean = a * prior[0] + (1 - a) * stats[:, 0]
    var = a * (prior[1] + (prior[0] - mean) ** 2) + (1 - a) * (stats[:, 1] + (stats[:, 0] - mean) ** 2)
    return torch.stack([mean, var], dim=1)


class AudioStats(nn.Module):
    """(B, L, T, D) states and lengths -> (B, d_model): per-layer mean and std over valid frames."""

    def __init__(self, n_layers: int, dim: int, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm1d(2 * n_layers * dim)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * n_layers * dim, d_model)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = lengths_to_mask(lengths, states.shape[2])[:, None, :, None].to(states.dtype)  # (B, 1, T, 1)
        n = m.sum(dim=2).clamp(min=1)
        mean = (states * m).sum(dim=2) / n  # (B, L, D)
        var = (((states - mean[:, :, None]) * m) ** 2).sum(dim=2) / n
        std = torch.sqrt(var + 1e-5)
        stats = torch.cat([mean, std], dim=1).flatten(1)  # (B, 2 * L * D)
        bn = self.norm  # a training batch of one (a last short batch) is normalised with the running statistics
        stats = F.batch_norm(stats, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                             training=self.training and stats.shape[0] > 1, momentum=bn.momentum, eps=bn.eps)
        return F.leaky_relu(self.proj(self.drop(stats)))


class FusionHead(nn.Module):
    """Stacked encoder states of both modalities -> class logits (B, n_classes).

    Takes plain numbers (encoder widths and layer counts, model width, heads, classes);
    `forward` always returns logits.
    """

    def __init__(
        self,
        audio_dim: int,
        text_dim: int,
        audio_layers: int,
        text_layers: int,
        d_model: int,
        n_heads: int,
        n_classes: int,
        head_dims: tuple[int, ...] = (128,),
        dropout: float = 0.1,
        pooling: str = "mean",
        modalities: str = "both",
        layer_mix: bool = False,
        residual: bool = False,
        audio_layer_concat: bool = False,
        speaker_norm: str = "none",
        temperature: float = 1.0,
    ):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"A head's temperature must be positive, not {temperature}.")
        self.temperature = float(temperature)  # logits are divided by it (memocmt.calibration)
        pooling, audio_stats = split_pooling(pooling)
        if modalities not in MODALITIES:
            raise ValueError(f"Unknown modalities {modalities!r}; choose one of {', '.join(MODALITIES)}.")
        self.pooling = pooling
        self.modalities = modalities
        self.use_audio = modalities in ("both", "audio")
        self.use_text = modalities in ("both", "text")
        if speaker_norm not in SPEAKER_NORMS:
            raise ValueError(f"Unknown speaker_norm {speaker_norm!r}; choose one of {', '.join(SPEAKER_NORMS)}.")
        self.speaker_norm = speaker_norm if self.use_audio and speaker_norm != "none" else ""  # "" when off
        if self.speaker_norm:  # statistics of all training utterances, set by training (memocmt.speaker_norm)
            self.register_buffer("speaker_prior", torch.stack([torch.zeros(audio_layers, audio_dim),
                                                               torch.ones(audio_layers, audio_dim)]))
        if self.use_audio:
            if audio_layer_concat:  # every layer's features, normalised, projected to d_model
                self.audio_mix = LayerConcat()
                self.audio_in = nn.Sequential(nn.LayerNorm(audio_layers * audio_dim), nn.Linear(audio_layers * audio_dim, d_model))
            else:
                self.audio_mix = LayerMix(audio_layers, layer_mix)
                self.audio_in = nn.Linear(audio_dim, d_model) if audio_dim != d_model else nn.Identity()
            self.audio_branch = FusionBranch(d_model, n_heads, dropout, residual)  # audio queries
        self.audio_stats = AudioStats(audio_layers, audio_dim, d_model, dropout) if audio_stats and self.use_audio else None
        if self.use_text:
            self.text_mix = LayerMix(text_layers, layer_mix)
            self.text_in = nn.Linear(text_dim, d_model) if text_dim != d_model else nn.Identity()
            self.text_branch = FusionBranch(d_model, n_heads, dropout, residual)  # text queries
        layers: list[nn.Module] = []
        width = 2 * d_model if self.audio_stats is not None else d_model
        for hidden in head_dims:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(
        self,
        audio_states: torch.Tensor | None,
        audio_lengths: torch.Tensor | None,
        text_states: torch.Tensor | None,
        text_lengths: torch.Tensor | None,
        speaker_stats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits; `speaker_stats` (B, 2, L, D) are the speakers' statistics for a `speaker_norm` head (ignored otherwise)."""
        parts, valids = [], []
        if self.use_audio:
            assert audio_states is not None and audio_lengths is not None, "this head needs audio states"
            if self.speaker_norm:
                if speaker_stats is None:  # a speaker heard once: this utterance and the prior
                    speaker_stats = pool_with_prior(utterance_stats(audio_states, audio_lengths), self.speaker_prior)
                speaker_stats = speaker_stats.to(audio_states.dtype)
                audio_states = audio_states - speaker_stats[:, 0, :, None, :]
                if self.speaker_norm == "mean+std":
                    audio_states = audio_states * torch.rsqrt(speaker_stats[:, 1, :, None, :] + SPEAKER_VAR_EPS)
            audio = self.audio_in(self.audio_mix(audio_states))
            audio_valid = lengths_to_mask(audio_lengths, audio.shape[1])
        if self.use_text:
            assert text_states is not None and text_lengths is not None, "this head needs text states"
            text = self.text_in(self.text_mix(text_states))
            text_valid = lengths_to_mask(text_lengths, text.shape[1])
        if self.modalities == "both":
            parts = [self.text_branch(text, audio, audio_valid), self.audio_branch(audio, text, text_valid)]
            valids = [text_valid, audio_valid]
        elif self.use_text:
            parts, valids = [self.text_branch(text, text, text_valid)], [text_valid]
        else:
            parts, valids = [self.audio_branch(audio, audio, audio_valid)], [audio_valid]
        fused = torch.cat(parts, dim=1)
        pooled = masked_pool(fused, torch.cat(valids, dim=1), self.pooling)
        if self.audio_stats is not None:
            pooled = torch.cat([pooled, self.audio_stats(audio_states, audio_lengths)], dim=-1)
        logits = self.classifier(pooled)
        return logits / self.temperature if self.temperature != 1.0 else logits


class EnsembleHead(nn.Module):
    """Heads over the same encoder states whose class probabilities multiply (late fusion):
    logits = the sum of the members' log-softmaxes, so softmax(logits) is their normalised product.

    Takes what a FusionHead takes. Members that use audio must share one `speaker_norm` mode;
    the ensemble holds the speaker prior and gives every member the same statistics.
    """

    def __init__(self, members: list[FusionHead], temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"An ensemble's temperature must be positive, not {temperature}.")
        self.temperature = float(temperature)  # divides the summed log-probabilities (memocmt.calibration)
        if len(members) < 2:
            raise ValueError("An ensemble needs at least two heads.")
        use_audio = any(m.use_audio for m in members)
        use_text = any(m.use_text for m in members)
        self.modalities = "both" if use_audio and use_text else ("audio" if use_audio else "text")
        self.use_audio, self.use_text = use_audio, use_text
        norms = {m.speaker_norm for m in members if m.use_audio}
        if len(norms) > 1:
            raise ValueError(f"The heads normalise speakers differently ({', '.join(sorted(n or 'none' for n in norms))}); "
                             "ensemble heads trained with the same speaker_norm.")
        self.speaker_norm = norms.pop() if norms else ""
        self.members = nn.ModuleList(members)
        if self.speaker_norm:
            first = next(m for m in members if m.speaker_norm)
            self.register_buffer("speaker_prior", first.speaker_prior.detach().clone())

    def forward(
        self,
        audio_states: torch.Tensor | None,
        audio_lengths: torch.Tensor | None,
        text_states: torch.Tensor | None,
        text_lengths: torch.Tensor | None,
        speaker_stats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.speaker_norm and speaker_stats is None:  # a speaker heard once: this utterance and the prior
            speaker_stats = pool_with_prior(utterance_stats(audio_states, audio_lengths), self.speaker_prior)
        logits = [m(audio_states, audio_lengths, text_states, text_lengths, speaker_stats) for m in self.members]
        summed = torch.stack([F.log_softmax(z.float(), dim=-1) for z in logits]).sum(dim=0)
        return summed / self.temperature if self.temperature != 1.0 else summed

    def audio_logits(
        self,
        audio_states: torch.Tensor,
        audio_lengths: torch.Tensor,
        speaker_stats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The product of the audio-only members alone (each at its own temperature): the prediction without
        the transcript, for an utterance in a language the model does not read (memocmt.language_policy)."""
        audio_only = [m for m in self.members if not m.use_text]
        if not audio_only:
            raise ValueError("This ensemble has no audio-only member to classify without text.")
        if self.speaker_norm and speaker_stats is None:
            speaker_stats = pool_with_prior(utterance_stats(audio_states, audio_lengths), self.speaker_prior)
        logits = [m(audio_states, audio_lengths, None, None, speaker_stats) for m in audio_only]
        return torch.stack([F.log_softmax(z.float(), dim=-1) for z in logits]).sum(dim=0)
