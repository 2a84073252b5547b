"""A loaded ONNX bundle: the graphs' sessions, the tokenizer, and every stage from audio and text
to an emotion (PyTorch-free).

`load_bundle` opens a folder in the format of `memocmt.bundle_format`, checks its files and
starts one ONNX Runtime session per graph; `Bundle` runs the stages. Features come from
`memocmt.features` (NumPy), so the graphs are fed exactly what PyTorch was compared with at
export time. The realtime loop can call `encode_audio` while ASR is still decoding, then
`encode_text` and `classify` once the transcript is known. Users import all of this from
`memocmt.runtime`.

This module imports only NumPy, `tokenizers` and (lazily) onnxruntime; never PyTorch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, check_audio
from .bundle_format import GRAPH_FILES, SPEAKER_PRIOR_FILE, TOKENIZER_FILE, VOICES_FILE, BundleError
from .bundle_format import graph_interface, read_bundle_manifest, verify_bundle_files
from .features import FeatureSpec, extract_features, pad_batch
from .language_policy import has_audio_fallback, reads_text
from .providers import ProviderChoice, choose_providers, create_session, default_threads
from .results import Prediction
from .speaker_norm import pool_stats, utterance_stats
from .speakers import VoiceProjection

logger = logging.getLogger("memocmt")

WARMUP_AUDIO_S = 1.0


@dataclass
class AudioEncoding:
    """Audio encoder output for a batch: states (B, L, T, D) on the bundle's device, and lengths."""

    states: object  # np.ndarray on CPU, onnxruntime.OrtValue on CUDA
    lengths: np.ndarray  # (B,) valid frames
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class TextEncoding:
    """Text encoder output for a batch: states (B, L, T, D) on the bundle's device, and lengths."""

    states: object
    lengths: np.ndarray  # (B,) real tokens
    timings_ms: dict[str, float] = field(default_factory=dict)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Bundle:
    """Loaded graphs, tokenizer and manifest of one exported model."""

    def __init__(self, path: Path, manifest: dict, sessions: dict, tokenizer, choice: ProviderChoice):
        self.path = path
        self.manifest = manifest
        self.sessions = sessions  # "audio" / "text" / "fusion" -> InferenceSession
        self.tokenizer = tokenizer
        self.labels: list[str] = list(manifest["labels"])
        self.modalities: str = manifest["modalities"]
        self.device = choice.device
        self.feature_spec = FeatureSpec(**manifest["audio"]["feature_spec"]) if "audio" in sessions else None
        # Dynamic int8 quantizes each activation with one scale over the whole tensor, so in a
        # batch every utterance would change the others' rounding (measured on the shipped
        # model: batches of 8 disagreed with one-at-a-time on 9% of RAVDESS test predictions).
        # int8 bundles therefore run every graph one utterance at a time.
        self.item_by_item = manifest.get("precision") == "int8"
        # Speaker-normalised head (memocmt.speaker_norm): the fusion graph takes speaker statistics.
        norm = manifest.get("config", {}).get("speaker_norm", "none")
        self.speaker_norm: str = norm if norm != "none" and self.uses_audio else ""
        self.speaker_prior = _load_prior(path) if self.speaker_norm else None
        # How evaluation cuts recorded clips for this model (MemoCMTConfig.trim; live segments are already cut).
        self.trim: str = manifest.get("config", {}).get("trim", "none")
        # languages whose transcripts the model reads ([]: all); another known language is classified from audio
        # alone by the fusion graph's `audio_logits` (memocmt.language_policy)
        self.text_languages: list[str] = list(manifest.get("config", {}).get("text_languages", []))
        self.audio_fallback: bool = has_audio_fallback(manifest.get("config", {}))
        self.voices = _load_voices(path, self.speaker_prior) if self.speaker_norm and (path / VOICES_FILE).is_file() else None
        self.load_ms = 0.0
        self.warmup_ms = 0.0

    @property
    def uses_audio(self) -> bool:
        return "audio" in self.sessions

    @property
    def uses_text(self) -> bool:
        return "text" in self.sessions

    # ------------------------------------------------------------------ graph calls

    def _run(self, stage: str, feeds: dict, outputs: list[str], keep_states: bool) -> list:
        """Run one graph. On CUDA, IOBinding keeps "states" outputs on the GPU (as OrtValues) for
        the next graph when `keep_states`; every other output comes back as a NumPy array."""
        session = self.sessions[stage]
        if self.device != "cuda":
            return session.run(outputs, feeds)
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        on_device = [keep_states and name == "states" for name in outputs]
        for name, device in zip(outputs, on_device):
            binding.bind_output(name, "cuda" if device else "cpu")
        session.run_with_iobinding(binding)
        return [v if device else v.numpy() for v, device in zip(binding.get_outputs(), on_device)]

    # ------------------------------------------------------------------ stages

    def encode_audio(self, audio: np.ndarray) -> AudioEncoding:
        """Features and audio encoder states of one utterance (float32 16 kHz mono in [-1, 1])."""
        return self.encode_audio_batch([audio])

    def encode_audio_batch(self, audios: list[np.ndarray]) -> AudioEncoding:
        if not self.uses_audio:
            raise ValueError(f"This bundle is a {self.modalities}-only model; it has no audio encoder.")
        info = self.manifest["audio"]
        start = time.perf_counter()
        feats = [extract_features(self._check_audio(a, i), self.feature_spec) for i, a in enumerate(audios)]
        features_ms = _ms_since(start)
        start = time.perf_counter()
        names = graph_interface("audio", self.modalities)[1]
        if (info["batchable"] and not self.item_by_item) or len(feats) == 1:
            padded, lengths = pad_batch(feats)
            states, out_lengths = self._run("audio", {"features": padded, "lengths": lengths}, names, keep_states=True)
        else:  # group-normed front ends see padding: encode item by item, then pad the states
            parts = []
            for x in feats:
                padded, lengths = pad_batch([x])
                s, n = self._run("audio", {"features": padded, "lengths": lengths}, names, keep_states=False)
                parts.append((s, n))
            states = _pad_states([s for s, _ in parts])
            out_lengths = np.concatenate([n for _, n in parts])
        return AudioEncoding(states, out_lengths.astype(np.int64), {"features": features_ms, "audio_encoder": _ms_since(start)})

    def whisper_encoder(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """`final_audio_states`, the encoder pass that short-context ASR decodes from, when the audio
        encoder takes Whisper-style log-mel input (the transcriber checks that it really is its own
        encoder before using it); None otherwise."""
        audio = self.manifest.get("audio") or {}
        if not self.uses_audio or (audio.get("feature_spec") or {}).get("kind") != "log_mel":
            return None
        return self.final_audio_states

    def final_audio_states(self, audio: np.ndarray) -> np.ndarray:
        """Final-layer audio encoder states (frames, d_model) of one utterance at its own length:
        the encoder pass that short-context ASR decodes from (see `whisper_encoder`)."""
        encoding = self.encode_audio(audio)
        return to_host(encoding.states)[0, -1, : int(encoding.lengths[0])]

    def _check_audio(self, audio: np.ndarray, index: int) -> np.ndarray:
        audio = check_audio(audio, name=f"audio[{index}]")
        max_samples = self.manifest["audio"].get("max_samples")
        if max_samples and audio.size > max_samples:
            raise AudioError(
                f"audio[{index}] is {audio.size / SAMPLE_RATE:.1f} s long but this model's audio encoder "
                f"takes at most {max_samples / SAMPLE_RATE:.0f} s; split the utterance."
            )
        return audio

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask (int64), padded to the longest text, as at export time."""
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("Transcripts must be strings (use '' when nothing was said).")
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def encode_text(self, text: str) -> TextEncoding:
        return self.encode_text_batch([text])

    def encode_text_batch(self, texts: list[str]) -> TextEncoding:
        if not self.uses_text:
            raise ValueError(f"This bundle is a {self.modalities}-only model; it has no text encoder.")
        start = time.perf_counter()
        if self.item_by_item and len(texts) > 1:
            parts = [self.encode_text_batch([t]) for t in texts]
            states = _pad_states([to_host(p.states) for p in parts])
            lengths = np.concatenate([p.lengths for p in parts])
            return TextEncoding(states, lengths, {"text_encoder": _ms_since(start)})
        ids, mask = self.tokenize(texts)
        (states,) = self._run("text", {"input_ids": ids, "attention_mask": mask}, ["states"], keep_states=True)
        return TextEncoding(states, mask.sum(axis=1).astype(np.int64), {"text_encoder": _ms_since(start)})

    def audio_stats(self, audios: list[np.ndarray] | AudioEncoding) -> np.ndarray:
        """(B, 2, L, D) float32 mean and variance of every audio encoder layer per utterance (raw
        audio or an encoding): what the speaker statistics of a speaker_norm model pool."""
        encoding = audios if isinstance(audios, AudioEncoding) else self.encode_audio_batch(audios)
        return utterance_stats(to_host(encoding.states), encoding.lengths)

    def reads_text(self, language: str | None) -> bool:
        """Whether the transcript of an utterance in `language` ("" or None: unknown) is read, or the utterance is
        classified from its audio alone (memocmt.language_policy)."""
        return not self.audio_fallback or reads_text(self.text_languages, language)

    def logits(self, audio: AudioEncoding | None, text: TextEncoding | None,
               speaker_stats: np.ndarray | None = None, *, read_text: bool = True) -> np.ndarray:
        """Fusion head output (B, classes) for encodings of the same batch. A speaker_norm model
        takes speaker statistics (B, 2, L, D); without them each utterance uses its own with the prior.
        `read_text=False` (a bundle with an audio fallback) gives the audio-only members' output instead."""
        if not read_text and not self.audio_fallback:
            raise ValueError("This bundle has no audio-only output; it reads every transcript.")
        first = audio if audio is not None else text
        batch = 0 if first is None else len(first.lengths)
        if self.speaker_norm and audio is not None:
            if speaker_stats is None:  # a speaker heard once: each utterance with the prior
                speaker_stats = np.stack([pool_stats(s[None], self.speaker_prior) for s in self.audio_stats(audio)])
            speaker_stats = np.asarray(speaker_stats, dtype=np.float32)
            if speaker_stats.shape[1:] != self.speaker_prior.shape:
                raise ValueError(f"Speaker statistics must have shape (utterances, {', '.join(map(str, self.speaker_prior.shape))}), "
                                 f"not {speaker_stats.shape}; compute them with audio_stats and memocmt.speaker_norm.pool_stats.")
            if speaker_stats.shape[0] != batch:
                raise ValueError(f"Got speaker statistics for {speaker_stats.shape[0]} utterances but the batch has {batch}.")
        if self.item_by_item and batch > 1:
            return np.concatenate([self.logits(_item(audio, i), _item(text, i),
                                               None if speaker_stats is None else speaker_stats[i : i + 1],
                                               read_text=read_text)
                                   for i in range(batch)])
        feeds = {}
        if self.uses_audio:
            if audio is None:
                raise ValueError("This model uses audio; pass the audio encoding.")
            feeds.update(audio_states=audio.states, audio_lengths=audio.lengths)
            if self.speaker_norm:
                feeds["speaker_stats"] = speaker_stats
        if self.uses_text:
            if text is None:
                raise ValueError("This model uses text; pass the text encoding.")
            feeds.update(text_states=text.states, text_lengths=text.lengths)
        (logits,) = self._run("fusion", feeds, ["logits" if read_text else "audio_logits"], keep_states=False)
        return logits

    def classify(self, audio: AudioEncoding | None, text: TextEncoding | None,
                 speaker_stats: np.ndarray | None = None, language: str | None = None) -> Prediction:
        """Emotion of one utterance from its encodings; timings cover every stage so far. With a `language`
        the model does not read (see reads_text), the prediction comes from the audio alone."""
        return self.classify_batch(audio, text, speaker_stats, language)[0]

    def classify_batch(self, audio: AudioEncoding | None, text: TextEncoding | None,
                       speaker_stats: np.ndarray | None = None, language: str | None = None) -> list[Prediction]:
        start = time.perf_counter()
        read_text = self.reads_text(language)
        logits = self.logits(audio, text, speaker_stats, read_text=read_text)
        timings = {"features": 0.0, "audio_encoder": 0.0, "text_encoder": 0.0}
        for enc in (audio, text):
            if enc is not None:
                timings.update(enc.timings_ms)
        timings["fusion"] = _ms_since(start)
        timings["total"] = sum(timings.values())
        predictions = [Prediction.from_probabilities(self.labels, p, timings) for p in softmax(logits)]
        for prediction in predictions:
            prediction.read_text = read_text and self.uses_text
        return predictions

    # ------------------------------------------------------------------ one call

    def predict(self, audio: np.ndarray | None, text: str | None) -> Prediction:
        """Emotion of one utterance: float32 16 kHz mono audio in [-1, 1] and its transcript."""
        return self.predict_batch(None if audio is None else [audio], None if text is None else [text])[0]

    def predict_batch(self, audios: list[np.ndarray] | None, texts: list[str] | None,
                      speaker_stats: np.ndarray | None = None) -> list[Prediction]:
        """Predictions for a batch; `speaker_stats` (B, 2, L, D) are the speakers' statistics for a
        speaker_norm model (default: each utterance's own with the prior)."""
        start = time.perf_counter()
        audio_enc, text_enc = self.encode(audios, texts)
        predictions = self.classify_batch(audio_enc, text_enc, speaker_stats)
        total = _ms_since(start)
        for p in predictions:
            p.timings_ms["total"] = total
        return predictions

    def encode(self, audios: list[np.ndarray] | None, texts: list[str] | None) -> tuple:
        """Both encodings of a batch (None for a modality the model does not use)."""
        if audios is not None and texts is not None and len(audios) != len(texts):
            raise ValueError(f"Got {len(audios)} audio clips but {len(texts)} transcripts.")
        audio_enc = text_enc = None
        if self.uses_audio:
            if audios is None:
                raise ValueError("This model uses audio; pass the utterances' audio.")
            audio_enc = self.encode_audio_batch(audios)
        if self.uses_text:
            if texts is None:
                raise ValueError("This model uses text; pass the utterances' transcripts.")
            text_enc = self.encode_text_batch(texts)
        return audio_enc, text_enc

    def warm_up(self) -> float:
        """One prediction on synthetic input so the first real utterance is not slow; returns ms."""
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        audio = (0.05 * rng.standard_normal(int(WARMUP_AUDIO_S * SAMPLE_RATE))).astype(np.float32)
        self.predict(audio if self.uses_audio else None, "warm up" if self.uses_text else None)
        return _ms_since(start)


def _load_prior(path: Path) -> np.ndarray:
    try:
        prior = np.load(path / SPEAKER_PRIOR_FILE, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"Bundle {path} is a speaker-normalised model but {SPEAKER_PRIOR_FILE} cannot be read ({e}); "
                          "export the bundle again.") from e
    if prior.ndim != 3 or prior.shape[0] != 2:
        raise BundleError(f"{path / SPEAKER_PRIOR_FILE} has shape {prior.shape}, not (2, layers, width); export the bundle again.")
    return prior.astype(np.float32)


def _load_voices(path: Path, prior: np.ndarray) -> VoiceProjection:
    try:
        with np.load(path / VOICES_FILE, allow_pickle=False) as f:
            voices = VoiceProjection(f["center"], f["matrix"], float(f["threshold"]))
    except (OSError, KeyError, ValueError) as e:
        raise BundleError(f"{path / VOICES_FILE} cannot be read as voice signatures ({e}); export the bundle again.") from e
    if voices.features != prior.shape[1] * prior.shape[2]:
        raise BundleError(f"{path / VOICES_FILE} expects {voices.features} audio features but the model has "
                          f"{prior.shape[1]} x {prior.shape[2]}; export the bundle again.")
    return voices


def to_host(states) -> np.ndarray:
    """Graph states as a NumPy array: as they are on CPU, copied from the GPU when they are an OrtValue."""
    return states if isinstance(states, np.ndarray) else states.numpy()


def _item(encoding, i: int):
    """Utterance i of a batch encoding, its states cut to its own length (as if encoded alone)."""
    if encoding is None:
        return None
    n = int(encoding.lengths[i])
    return dataclasses.replace(encoding, states=to_host(encoding.states)[i : i + 1, :, :n], lengths=encoding.lengths[i : i + 1])


def _pad_states(states: list[np.ndarray]) -> np.ndarray:
    """Zero-pad (1, L, T_i, D) arrays along time and stack them to (B, L, T_max, D)."""
    t_max = max(s.shape[2] for s in states)
    out = np.zeros((len(states), states[0].shape[1], t_max, states[0].shape[3]), dtype=states[0].dtype)
    for i, s in enumerate(states):
        out[i, :, : s.shape[2]] = s[0]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _load_tokenizer(path: Path, text_info: dict):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length=int(text_info["max_tokens"]))
    tokenizer.enable_padding(pad_id=int(text_info["pad_id"]), pad_token=text_info["pad_token"])
    return tokenizer


def load_bundle(
    path: str | os.PathLike,
    providers: str | None = None,
    threads: int | None = None,
    *,
    warm_up: bool = True,
    verify_hashes: bool = True,
) -> Bundle:
    """Load a bundle folder on "cuda", "cpu" or automatically (None: CUDA when usable, else CPU).

    Refuses a bundle whose manifest has another format version or whose files do not match
    their recorded SHA-256, naming the file. `threads` sets CPU intra-op threads
    (default: physical cores, at most 4).
    """
    start = time.perf_counter()
    path = Path(path)
    manifest = read_bundle_manifest(path)
    if verify_hashes:
        verify_bundle_files(path, manifest)
    choice = choose_providers(providers)
    sessions = {stage: create_session(path / GRAPH_FILES[stage], choice, threads) for stage in manifest["graphs"]}
    active = {p for s in sessions.values() for p in s.get_providers()}
    if choice.device == "cuda" and "CUDAExecutionProvider" not in active:
        choice = ProviderChoice("cpu", ("CPUExecutionProvider",), "CUDA provider failed to start")
    thread_note = f", {threads or default_threads()} threads" if choice.device == "cpu" else ""
    logger.info("MemoCMT bundle %s runs on %s (%s%s)", path.name, choice.device.upper(), choice.reason, thread_note)
    tokenizer = _load_tokenizer(path, manifest["text"]) if "text" in sessions else None
    bundle = Bundle(path, manifest, sessions, tokenizer, choice)
    if warm_up:
        bundle.warmup_ms = bundle.warm_up()
    bundle.load_ms = _ms_since(start)
    return bundle
