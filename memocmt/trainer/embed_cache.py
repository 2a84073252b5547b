"""On-disk cache of frozen encoder states, so a frozen encoder runs once per utterance.

With both encoders frozen (the paper's setting) only the fusion head trains, and re-running
Whisper or HuBERT every epoch would cost a hundred times more than the head itself. Each
utterance's stacked hidden states (L, T, D) are stored once as float16 safetensors:

    <cache_dir>/audio-<encoder fingerprint>/<ab>/<key>.safetensors
    <cache_dir>/text-<encoder fingerprint>/<ab>/<key>.safetensors

The encoder fingerprint hashes the encoder's name, input spec and every weight, so another
encoder (or the same name with other weights) never reads stale states. An audio key hashes
the file's bytes, so an edited file is re-encoded while a copied or moved corpus keeps its
states; a text key hashes the text. Each entry also stores its key, and an entry that cannot be read or
does not match is reported, deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..audio import AudioError, audio_file_key, check_audio, load_audio
from ..features import extract_features, pad_batch
from ..manifest import Manifest, ManifestError, Problem
from ..perturb import Perturbation, perturbed_speaker

logger = logging.getLogger("memocmt")

CACHE_FORMAT = "memocmt-embedding"
STATES_KEY = "states"


class CacheError(RuntimeError):
    """A cache directory that cannot be used (not writable, not a directory)."""


def encoder_fingerprint(encoder: nn.Module, spec: dict) -> str:
    """SHA-256 of an encoder's weights and of `spec` (name, feature or tokenizer settings)."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def audio_key(path: str | os.PathLike, perturbation: Perturbation | None = None, trim: str = "none") -> str:
    """Cache key of a file's states, or of its perturbed copy's, as cut by `trim` (MemoCMTConfig.trim)."""
    from ..live.vad import TRIM_VERSIONS

    return audio_file_key(path) + (f"|{perturbation.cache_key}" if perturbation else "") + (
        f"|trim={TRIM_VERSIONS.get(trim, trim)}" if trim != "none" else "")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: list[str] = field(default_factory=list)  # entries that were unreadable and recomputed


class EmbeddingCache:
    """Frozen-encoder states of a MemoCMT model, computed on a miss and stored in `root`."""

    def __init__(self, root: str | os.PathLike, model):
        self.root = Path(root)
        self.model = model
        self.trim = getattr(model.config, "trim", "none")  # how clips are cut before encoding
        self.stats = CacheStats()
        self._dirs: dict[str, Path] = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"Cannot create the embedding cache directory {self.root}: {e}") from e
        if not os.access(self.root, os.W_OK):
            raise CacheError(f"The embedding cache directory {self.root} is not writable.")

    # ----------------------------------------------------------------- layout

    def _dir(self, kind: str) -> Path:
        if kind not in self._dirs:
            if kind == "audio":
                encoder = self.model.audio_encoder
                spec = {"name": encoder.name, "features": encoder.feature_spec.to_dict()}
            else:
                encoder = self.model.text_encoder
                tokenizer = encoder.tokenizer.backend_tokenizer.to_str() if hasattr(encoder.tokenizer, "backend_tokenizer") else ""
                spec = {"name": encoder.name, "max_tokens": self.model.config.max_text_tokens,
                        "tokenizer": hashlib.sha256(tokenizer.encode()).hexdigest()}
            self._dirs[kind] = self.root / f"{kind}-{encoder_fingerprint(encoder, spec)[:20]}"
        return self._dirs[kind]

    def entry_path(self, kind: str, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self._dir(kind) / digest[:2] / f"{digest}.safetensors"

    # ----------------------------------------------------------------- lookup

    def audio(self, path: str | os.PathLike, perturbation: Perturbation | None = None) -> torch.Tensor:
        """Stacked states (L, T, D) float16 of one audio file (perturbed, if given: memocmt.perturb);
        raises AudioError for a bad file."""
        key = audio_key(path, perturbation, self.trim) if Path(path).is_file() else str(path)
        return self._get("audio", key, lambda: self._encode_audio(Path(path), perturbation))

    def text(self, text: str) -> torch.Tensor:
        """Stacked states (L, T, D) float16 of one transcript (T includes [CLS] and [SEP])."""
        return self._get("text", "text|" + text, lambda: self._encode_text(text))

    def _get(self, kind: str, key: str, compute) -> torch.Tensor:
        path = self.entry_path(kind, key)
        if path.is_file():
            states = self._read(path, key)
            if states is not None:
                self.stats.hits += 1
                return states
        self.stats.misses += 1
        states = compute().to(torch.float16).contiguous()
        self._write(path, key, states)
        return states

    def _read(self, path: Path, key: str) -> torch.Tensor | None:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                states = f.get_tensor(STATES_KEY)
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            reason = f"unreadable ({type(e).__name__}: {e})"
        else:
            if metadata.get("format") == CACHE_FORMAT and metadata.get("key") == key and states.dim() == 3:
                return states
            reason = "its stored key does not match"
        logger.warning("Corrupt embedding cache entry %s: %s; recomputing it.", path, reason)
        self.stats.corrupt.append(str(path))
        path.unlink(missing_ok=True)
        return None

    def _write(self, path: Path, key: str, states: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({STATES_KEY: states}, str(tmp), metadata={"format": CACHE_FORMAT, "key": key})
        tmp.replace(path)

    # ----------------------------------------------------------------- encoding

    def fill_audio(self, paths: list[Path], batch_size: int = 8, perturbation: Perturbation | None = None) -> dict[str, str]:
        """Encode the files that miss the cache in padded batches (much faster than one by one).

        Returns {path: error} for files that cannot be used; they are left for `audio()` to report.
        """
        errors: dict[str, str] = {}
        todo = []
        for path in dict.fromkeys(Path(p) for p in paths):
            if not path.is_file():
                continue  # audio() raises the clear error
            key = audio_key(path, perturbation, self.trim)
            if not self.entry_path("audio", key).is_file():
                todo.append((path, key))
        spec = self.model.audio_encoder.feature_spec
        features = []
        for path, key in todo:
            try:
                features.append((extract_features(_load(path, perturbation, self.trim), spec), path, key))
            except (AudioError, OSError) as e:
                errors[str(path)] = str(e)
        features.sort(key=lambda item: item[0].shape[-1])
        device = self.model.device
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            padded, lengths = pad_batch([f for f, _, _ in chunk])
            with torch.inference_mode():
                states, out_lengths = self.model.encode_audio(torch.from_numpy(padded).to(device), torch.from_numpy(lengths).to(device))
            for i, (_, _, key) in enumerate(chunk):
                self.stats.misses += 1
                self._write(self.entry_path("audio", key), key, states[i, :, : int(out_lengths[i])].to(torch.float16).cpu().contiguous())
        return errors

    @torch.inference_mode()
    def _encode_audio(self, path: Path, perturbation: Perturbation | None = None) -> torch.Tensor:
        features = extract_features(_load(path, perturbation, self.trim), self.model.audio_encoder.feature_spec)
        padded, lengths = pad_batch([features])
        device = self.model.device
        states, lengths = self.model.encode_audio(torch.from_numpy(padded).to(device), torch.from_numpy(lengths).to(device))
        return states[0, :, : int(lengths[0])].cpu()

    @torch.inference_mode()
    def _encode_text(self, text: str) -> torch.Tensor:
        ids, mask = self.model.text_encoder.tokenize([text], self.model.config.max_text_tokens)
        device = self.model.device
        states, lengths = self.model.encode_text(ids.to(device), mask.to(device))
        return states[0, :, : int(lengths[0])].cpu()


def _load(path: Path, perturbation: Perturbation | None, trim: str = "none") -> np.ndarray:
    """A clip as training sees it: decoded, perturbed (if given), then cut by `trim`."""
    from ..perturb import as_trained

    audio = check_audio(load_audio(path), name=str(path))
    if perturbation is None:
        return as_trained(audio, None, trim, path.name)
    return check_audio(as_trained(audio, perturbation, trim, path.name), name=f"{path} ({perturbation.spec})")


@dataclass
class EmbeddedSplit:
    """Cached states and class ids of the usable utterances of one manifest."""

    audio: list[torch.Tensor | None]  # (L, T, D) float16 per utterance, None without audio
    text: list[torch.Tensor | None]
    targets: list[int]
    ids: list[str]  # utterance id (or audio path) per item
    skipped: list[Problem]  # utterances whose audio could not be used
    speakers: list = field(default_factory=list)  # (corpus, speaker) per item, None when unknown
    utterance_stats: list = field(default_factory=list)  # (2, L, D) float32 mean and variance of each item's audio states
    speaker_stats: list = field(default_factory=list)  # (2, L, D) float32 statistics of each item's speaker (speaker_norm heads)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: list[int]) -> "EmbeddedSplit":
        """The items at `index` (skipped files are not carried over)."""
        pick = lambda values: [values[i] for i in index] if values else []  # noqa: E731
        return EmbeddedSplit(pick(self.audio), pick(self.text), pick(self.targets), pick(self.ids), [],
                             pick(self.speakers), pick(self.utterance_stats), pick(self.speaker_stats))

    @classmethod
    def concat(cls, splits: list["EmbeddedSplit"]) -> "EmbeddedSplit":
        """All items of `splits` in order; statistics are kept only when every split has them."""
        joined = lambda name: [v for s in splits for v in getattr(s, name)]  # noqa: E731
        stats = lambda name: joined(name) if all(getattr(s, name) or not len(s) for s in splits) else []  # noqa: E731
        return cls(joined("audio"), joined("text"), joined("targets"), joined("ids"), joined("skipped"),
                   joined("speakers"), stats("utterance_stats"), stats("speaker_stats"))


def embed_manifest(
    cache: EmbeddingCache, manifest: Manifest, *, on_bad_file: str = "stop", progress: bool = True, desc: str = "embed",
    perturbation: Perturbation | None = None,
) -> EmbeddedSplit:
    """Cached states of every utterance; a bad audio file stops (naming it) or is skipped and listed.

    With a `perturbation` (memocmt.perturb), the states of each utterance's perturbed copy, whose
    speaker is a new voice (perturbed_speaker) and whose id is the utterance's own.
    """
    if on_bad_file not in ("skip", "stop"):
        raise ValueError(f"on_bad_file must be 'skip' or 'stop', not {on_bad_file!r}.")
    from tqdm.auto import tqdm

    use_audio = cache.model.audio_encoder is not None
    use_text = cache.model.text_encoder is not None
    index = manifest.label_to_id()
    out = EmbeddedSplit([], [], [], [], [])
    if use_audio:
        cache.fill_audio([u.audio for u in manifest.items], perturbation=perturbation)
    for row, u in enumerate(tqdm(manifest.items, desc=desc, disable=not progress, leave=False), start=1):
        try:
            audio = cache.audio(u.audio, perturbation) if use_audio else None
        except (AudioError, OSError) as e:
            problem = Problem(u.line or row, str(u.audio), str(e))
            if on_bad_file == "stop":
                name = manifest.source or "manifest"
                raise ManifestError(f"{name} row {problem.row}: cannot use {u.audio}: {e}") from e
            out.skipped.append(problem)
            continue
        out.audio.append(audio)
        out.text.append(cache.text(u.text) if use_text else None)
        out.targets.append(index[u.label])
        out.ids.append(u.id or str(u.audio))
        speaker = u.speaker_key() if u.speaker else None
        out.speakers.append(perturbed_speaker(speaker, perturbation) if perturbation and speaker else speaker)
    if out.skipped:
        logger.warning("Skipped %d unusable audio file(s): %s", len(out.skipped), "; ".join(str(p) for p in out.skipped[:5]))
    return out


def cached_utterance_stats(states: torch.Tensor) -> np.ndarray:
    """(2, L, D) float32 mean and variance over frames of one utterance's cached (L, T, D) states."""
    from ..speaker_norm import utterance_stats

    return utterance_stats(states.float().numpy()[None], np.array([states.shape[1]]))[0]


def prior_stats(split: EmbeddedSplit) -> torch.Tensor:
    """(2, L, D) statistics of all utterances of a (training) split with attached statistics, each
    weighted equally: a speaker_norm head's prior."""
    from ..speaker_norm import pool_stats

    return torch.from_numpy(pool_stats(np.stack(split.utterance_stats)))


def attach_speaker_stats(splits: list[EmbeddedSplit]) -> None:
    """Fill every split's `utterance_stats` and `speaker_stats`: each speaker's audio statistics
    pooled over all of that speaker's utterances in `splits` (memocmt.speaker_norm; no labels)."""
    from ..speaker_norm import group_stats

    splits = [s for s in splits if len(s)]
    if not splits:
        return
    for s in splits:
        s.utterance_stats = [cached_utterance_stats(a) for a in s.audio]
    pooled = group_stats(np.stack([u for s in splits for u in s.utterance_stats]), [spk for s in splits for spk in s.speakers])
    start = 0
    for s in splits:
        s.speaker_stats = [torch.from_numpy(o) for o in pooled[start : start + len(s)]]
        start += len(s)


def fit_voices(splits: list[EmbeddedSplit]):
    """Voice signatures (memocmt.speakers.VoiceProjection) fitted on the utterance statistics and
    speakers of `splits` (attach_speaker_stats first); None, with a log line, when the data has
    too few known speakers to tell voices apart.

    Synthetic speech is left out: an espeak voice varies its pitch and rate by rule from one
    utterance to the next, so counting that as within-speaker variation whitens away what tells
    people apart. Measured on the shipped head (benchmarks/studies/conversation.py, RAVDESS test actors):
    fitted with the synthetic voices as well, the tracker merged more people into one voice
    (purity 0.83 for pairs and 0.55-0.58 for four actors, against 0.86-0.89 and 0.67-0.77), for
    about the same UA."""
    from ..speakers import VoiceError, VoiceProjection
    from ..synthetic import CORPUS as SYNTHETIC

    known = [(u, spk) for s in splits for u, spk in zip(s.utterance_stats, s.speakers)
             if spk is not None and spk[0] != SYNTHETIC]
    try:
        if not known:
            raise VoiceError("no utterance has a speaker")
        return VoiceProjection.fit(np.stack([u for u, _ in known]), [spk for _, spk in known])
    except VoiceError as e:
        logger.info("No voice signatures for live speaker tracking: %s", e)
        return None
