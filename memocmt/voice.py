"""Speaker embeddings for the live tracker: a GE2E voice encoder run by ONNX Runtime, its front end in NumPy.

The encoder is the pretrained one that the `resemblyzer` wheel carries (memocmt-live[voice]):
a 3-layer LSTM over 40 mel bands whose last hidden state becomes a 256-d, L2-normalised
embedding, trained on thousands of speakers to tell voices apart (GE2E loss). Unlike the
emotion encoder's statistics (memocmt.speakers.VoiceProjection) it was never fitted to this
project's speakers or emotions.

The first use exports the wheel's weights to ONNX in `$MEMOCMT_HOME/voice/` (PyTorch side,
memocmt.onnx.voice, verified against PyTorch before it is kept); every later use only loads that
graph, so the live path needs neither PyTorch nor librosa. Without the wheel `voice_encoder()`
returns None and the tracker keeps the emotion model's own voice signatures.

The front end is memocmt.voice_frontend.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .voice_frontend import (  # noqa: F401  (the front end's names are memocmt.voice's too)
    EMBED_DIMS, HOP, INPUT_NAME, N_FFT, N_MELS, OUTPUT_NAME, PARTIAL_FRAMES, SAMPLE_RATE, TARGET_DBFS,
    mel_filterbank, mel_power, normalize_volume, partial_mels, partial_starts, pool_partials,
)

logger = logging.getLogger("memocmt")

WHEEL = "resemblyzer"  # the PyPI distribution (and module) that carries the weights
WHEEL_WEIGHTS = "resemblyzer/pretrained.pt"  # inside the wheel, as its RECORD names it
VOICE_EXTRA = "pip install 'memocmt-live[voice]'"


class VoiceModelError(RuntimeError):
    """The voice encoder's weights or graph cannot be used; the message says why."""


# ---------------------------------------------------------------------- the ONNX encoder


class VoiceEncoder:
    """Utterance audio -> (EMBED_DIMS,) unit speaker embedding, by the exported GE2E graph."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        from .providers import choose_providers, create_session

        self.path = Path(path)
        self.session = create_session(self.path, choose_providers("cpu"), threads)
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([INPUT_NAME], [OUTPUT_NAME]):
            raise VoiceModelError(f"{self.path} is not a voice encoder graph: inputs and outputs {names}.")

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """Float 16 kHz mono audio in [-1, 1] -> its unit speaker embedding (float32, EMBED_DIMS)."""
        mels = partial_mels(audio)
        partials = self.session.run([OUTPUT_NAME], {INPUT_NAME: mels})[0]
        return pool_partials(partials)


@dataclass(frozen=True)
class VoiceWeights:
    """Where the wheel keeps the pretrained encoder, and the sha256 its RECORD gives for it."""

    path: Path
    sha256: str  # hex


def wheel_weights() -> VoiceWeights | None:
    """The installed `resemblyzer` wheel's weights (without importing it), or None when it is absent."""
    import base64
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/") == WHEEL_WEIGHTS and entry.hash is not None and entry.hash.mode == "sha256":
            digest = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
            path = Path(dist.locate_file(entry)).resolve()
            return VoiceWeights(path, digest) if path.is_file() else None
    return None


def cached_graph_path(weights: VoiceWeights) -> Path:
    from .wheel_models import memocmt_home

    return memocmt_home() / "voice" / f"ge2e-{weights.sha256[:16]}.onnx"


def ensure_voice_graph(weights: VoiceWeights) -> Path:
    """The exported graph of these weights in the user cache, exported and verified there on first use."""
    path = cached_graph_path(weights)
    if path.is_file():
        return path
    try:
        from .onnx.voice import export_voice_graph
    except ImportError as e:
        raise VoiceModelError(f"Exporting the voice encoder needs PyTorch ({e.name} is missing); {VOICE_EXTRA}.") from e
    logger.warning("First use: exporting the voice encoder to ONNX in %s (a few seconds, once)", path)
    export_voice_graph(weights.path, path)
    return path


@lru_cache(maxsize=1)
def voice_encoder() -> VoiceEncoder | None:
    """The GE2E voice encoder, or None (with one log line) when the wheel is absent or unusable:
    speakers are then told apart by the emotion model's own voice signatures."""
    weights = wheel_weights()
    if weights is None:
        logger.info("No %s wheel: voices are told apart by the emotion model's statistics (%s)", WHEEL, VOICE_EXTRA)
        return None
    try:
        return VoiceEncoder(ensure_voice_graph(weights))
    except (VoiceModelError, RuntimeError) as e:
        logger.warning("The voice encoder is unusable, voices are told apart by the emotion model's statistics: %s", e)
        return None


SPEAKER_MODES = ("auto", "ge2e", "one")  # memocmt-live --speakers, the server's `speakers`


def tracker_voices(projection, speakers: str = "auto"):
    """What a voice tracker tells voices apart by: with `speakers` "auto", the emotion model's own
    `projection` (memocmt.speakers.VoiceProjection: the better one-speaker figure, and chosen on the
    development actors); with "ge2e", GE2E speaker embeddings when the voice encoder is installed
    (two or four people apart: higher purity), else that projection; with "one", none (one voice).
    A model without a projection (None) does not track voices, and still does not."""
    if projection is None or speakers == "one":
        return None
    if speakers != "ge2e":
        return projection
    encoder = voice_encoder()
    if encoder is None:
        return projection
    from .speakers import EmbeddingVoices

    return EmbeddingVoices(encoder)
