"""Who is speaking: voice signatures and the live speaker tracker (NumPy only; the runtime uses it).

A speaker-normalised model (memocmt.speaker_norm) classifies an utterance against the statistics
of its speaker's other utterances. Live, with several people talking, one shared window of
recent utterances mixes their voices. `SpeakerTracker` keeps one window per voice instead: each
utterance joins the voice whose signature it is nearest, or starts a new one.

A voice signature is a linear projection of the utterance's mean encoder state (all layers),
fitted on the training speakers (`VoiceProjection.fit`, no emotion labels): centre, keep the
leading principal directions, then whiten by the within-speaker covariance, so that what varies
inside one speaker (emotion, words) counts little and what differs between speakers counts
much. In that space one speaker's utterances lie about 1 apart (root mean square per dimension),
different speakers about 2.5, and signatures are compared by that distance, not by angle: a
shift that every utterance of a session shares (a microphone, or live segments that hold less
silence than the training recordings) moves all signatures alike and cancels in a distance,
whereas it made the cosines of different live speakers look alike.

A voice heard only a few times has a centroid that is itself one noisy utterance or a few: a new
utterance of the same person lies farther from it than from a well-known voice's centroid, by
sqrt(1 + 1/n) for a centroid of n utterances. The threshold is for a voice of CENTROID_REF_UTTERANCES
and widens by that factor for voices heard less often, so one speaker is not split into several
while the session is young (measured on sessions of development actors, signatures fitted on the
other development actors: one-speaker sessions kept in one voice 95% -> 98% of utterances at the
same threshold, two-speaker clustering F 0.916 -> 0.913, four-speaker 0.77 -> 0.74).

The threshold was chosen without the test actors: `python benchmarks/studies/conversation.py
--select-threshold` fits signatures on 12 of the development actors 01-16 and tracks sessions of
the other 4.

Where the GE2E voice encoder is installed (memocmt.voice, memocmt-live[voice]) the tracker uses
its speaker embeddings instead (`EmbeddingVoices`), trained to tell thousands of speakers apart
and compared by cosine distance to a voice's mean embedding. EMBED_THRESHOLD is the best
clustering F of `conversation.py --select-threshold` on the development actors (0.854 at 0.25 with
the widening below applied as (1 + 1/n), 0.852 at 0.325 without; the signatures above score 0.874
there). On the test actors it splits a lone speaker more often than the signatures
(benchmarks/results/voice/README.md), hence opt-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Protocol, Sequence

import numpy as np

from .speaker_norm import ADAPT_WINDOW, SpeakerAdapter

VOICE_DIMS = 150  # principal directions kept before within-speaker whitening
VOICE_THRESHOLD = 1.6  # RMS distance per dimension to a voice's centroid within which an utterance joins it
MAX_VOICES = 8  # voices a live session tells apart; beyond this, utterances join the nearest
CENTROID_REF_UTTERANCES = 20  # the threshold is for a voice centroid of this many utterances (see above)
_WITHIN_RIDGE = 1e-3  # within-speaker covariance regulariser, relative to its mean eigenvalue
EMBED_THRESHOLD = 0.25  # cosine distance to a voice's mean speaker embedding within which an utterance joins it


class Voices(Protocol):
    """How the tracker tells voices apart: a signature per utterance, a distance to voice centroids."""

    threshold: float
    needs_audio: bool  # signatures come from the audio (else from the emotion encoder's statistics)

    def signature(self, stats: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray: ...

    def distance(self, signatures: np.ndarray, centroids: np.ndarray) -> np.ndarray: ...

    def widening(self, counts: np.ndarray) -> np.ndarray: ...


class VoiceError(ValueError):
    """Statistics or a projection that cannot give voice signatures."""


@dataclass
class VoiceProjection:
    """signature(stats) = (mean states of all layers, flattened - center) @ matrix, whitened so that
    one speaker's signatures spread about 1 per dimension."""

    center: np.ndarray  # (L * D,) float32
    matrix: np.ndarray  # (L * D, K) float32
    threshold: float = VOICE_THRESHOLD  # RMS distance per dimension for "the same voice"

    def __post_init__(self) -> None:
        self.center = np.asarray(self.center, dtype=np.float32)
        self.matrix = np.asarray(self.matrix, dtype=np.float32)
        if self.center.ndim != 1 or self.matrix.ndim != 2 or self.matrix.shape[0] != self.center.shape[0]:
            raise VoiceError(f"A voice projection needs a (F,) center and an (F, K) matrix, not "
                             f"{self.center.shape} and {self.matrix.shape}.")

    @property
    def features(self) -> int:
        return self.center.shape[0]

    @classmethod
    def fit(cls, stats: np.ndarray, speakers: Sequence[Hashable], dims: int = VOICE_DIMS,
            threshold: float = VOICE_THRESHOLD) -> "VoiceProjection":
        """Fit on (N, 2, L, D) utterance statistics (memocmt.speaker_norm.utterance_stats) and each
        utterance's speaker; speakers with a single utterance only help the principal directions."""
        x = _flat_means(stats)
        speakers = list(speakers)
        if len(speakers) != len(x):
            raise VoiceError(f"Got statistics of {len(x)} utterances but {len(speakers)} speakers.")
        groups: dict[Hashable, list[int]] = {}
        for i, s in enumerate(speakers):
            groups.setdefault(s, []).append(i)
        repeated = [idx for idx in groups.values() if len(idx) > 1]
        if len(repeated) < 2:
            raise VoiceError("Fitting voice signatures needs at least two speakers with two or more utterances each.")
        # Standardise each feature by the spread of all frames (layers differ in scale by orders of magnitude).
        mean = x.mean(axis=0)
        scale = np.sqrt(np.asarray(stats, dtype=np.float32)[:, 1].reshape(len(x), -1).mean(axis=0) + x.var(axis=0)) + 1e-6
        z = (x - mean) / scale
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        basis = vt[: min(dims, len(vt))].T  # (F, K)
        y = z @ basis
        centred = np.concatenate([y[idx] - y[idx].mean(axis=0) for idx in repeated])
        within = centred.T @ centred / len(centred)
        within += _WITHIN_RIDGE * np.trace(within) / len(within) * np.eye(len(within))
        eigval, eigvec = np.linalg.eigh(within)
        whiten = eigvec @ np.diag(eigval ** -0.5) @ eigvec.T
        # Fold the standardisation into one affine map: (x - mean) / scale @ basis @ whiten.
        return cls(center=mean, matrix=(basis @ whiten) / scale[:, None], threshold=threshold)

    def signatures(self, stats: np.ndarray) -> np.ndarray:
        """(N, 2, L, D) or (2, L, D) utterance statistics -> (N, K) voice signatures."""
        stats = np.asarray(stats, dtype=np.float32)
        x = _flat_means(stats[None] if stats.ndim == 3 else stats)
        if x.shape[1] != self.features:
            raise VoiceError(f"Utterance statistics give {x.shape[1]} features but the voice projection expects "
                             f"{self.features}; it belongs to another audio encoder.")
        return (x - self.center) @ self.matrix

    needs_audio = False

    def signature(self, stats: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
        """One utterance's (K,) signature from its (2, L, D) statistics (the audio is not needed)."""
        return self.signatures(stats)[0]

    def distance(self, signatures: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """(N, K) signatures x (M, K) centroids -> (N, M) root mean square difference per dimension."""
        diff = np.asarray(signatures)[:, None, :] - np.asarray(centroids)[None, :, :]
        return np.sqrt((diff ** 2).mean(axis=-1))

    def widening(self, counts: np.ndarray) -> np.ndarray:
        """Factor by which each voice's distances are divided: its centroid of `counts` utterances is
        uncertain, a new utterance lies sqrt(1 + 1/n) as far from it as from the true centre."""
        return np.sqrt((1.0 + 1.0 / counts) / (1.0 + 1.0 / CENTROID_REF_UTTERANCES))


class EmbeddingVoices:
    """Voices told apart by a speaker encoder's unit embeddings of the audio (memocmt.voice.VoiceEncoder),
    compared by cosine distance to each voice's mean embedding."""

    needs_audio = True

    def __init__(self, encoder, threshold: float = EMBED_THRESHOLD, widen_young: bool = True):
        self.encoder = encoder  # has embed(audio) -> (K,) unit vector
        self.threshold = float(threshold)
        self.widen_young = widen_young

    def signature(self, stats: np.ndarray | None, audio: np.ndarray | None = None) -> np.ndarray:
        if audio is None:
            raise VoiceError("Speaker embeddings need the utterance's audio.")
        return np.asarray(self.encoder.embed(audio), dtype=np.float32)

    def distance(self, signatures: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """(N, K) x (M, K) -> (N, M) cosine distance, 1 - cos."""
        a = np.asarray(signatures, dtype=np.float32)
        b = np.asarray(centroids, dtype=np.float32)
        a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
        return 1.0 - a @ b.T

    def widening(self, counts: np.ndarray) -> np.ndarray:
        """For unit vectors 1 - cos is half the squared distance, so a centroid of n utterances
        widens it by (1 + 1/n), relative to a voice of CENTROID_REF_UTTERANCES (1 when not widening)."""
        if not self.widen_young:
            return np.ones_like(counts, dtype=np.float32)
        return (1.0 + 1.0 / counts) / (1.0 + 1.0 / CENTROID_REF_UTTERANCES)


def _flat_means(stats: np.ndarray) -> np.ndarray:
    stats = np.asarray(stats, dtype=np.float32)
    if stats.ndim != 4 or stats.shape[1] != 2:
        raise VoiceError(f"Expected utterance statistics of shape (N, 2, layers, dim), not {stats.shape}.")
    return stats[:, 0].reshape(len(stats), -1)


class SpeakerTracker:
    """Speaker statistics of a live session with several people: one `SpeakerAdapter` window per
    voice. `update(stats, audio=...)` assigns the utterance to the voice whose centroid (mean
    signature) is nearest, if within `voices.threshold`, or else to a new voice (at most
    `max_voices`; then the nearest), and returns (statistics to classify it with (1, 2, L, D), voice
    index from 0). Signatures come from `voices`: the emotion encoder's statistics
    (`VoiceProjection`) or a speaker encoder's embedding of the audio (`EmbeddingVoices`, which needs
    `audio` or a precomputed `signature`). Without `voices` everyone is one voice, a single window,
    and no voice is named (None)."""

    def __init__(self, voices: Voices | None, window: int = ADAPT_WINDOW, prior: np.ndarray | None = None,
                 max_voices: int = MAX_VOICES):
        if max_voices < 1 or window < 1:
            raise ValueError(f"A speaker tracker needs at least one voice and a window of at least one utterance, "
                             f"not {max_voices} and {window}.")
        self.voices, self.window, self.prior, self.max_voices = voices, window, prior, max_voices
        self._sums: list[np.ndarray] = []  # sum of each voice's signatures
        self._counts: list[int] = []
        self._adapters: list[SpeakerAdapter] = []
        self._tentative: tuple[object, np.ndarray] | None = None  # (statistics, signature) of the last uncommitted update

    def __len__(self) -> int:
        return len(self._adapters)

    @property
    def needs_audio(self) -> bool:
        """Whether `update` needs the utterance's audio (or its `signature`) besides its statistics."""
        return self.voices is not None and self.voices.needs_audio

    def signature(self, stats: np.ndarray | None, audio: np.ndarray | None = None) -> np.ndarray:
        """The utterance's voice signature (may be computed apart, e.g. while speech is recognised)."""
        if self.voices is None:
            raise VoiceError("A tracker without voices has no signatures.")
        return self.voices.signature(stats, audio)

    def assign(self, signature: np.ndarray) -> int:
        """Index of the voice a signature joins (len(self) for a new one); changes nothing."""
        if not self._sums:
            return 0
        counts = np.asarray(self._counts, dtype=np.float32)
        centroids = np.stack(self._sums) / counts[:, None]
        # a centroid of few utterances is uncertain: compare at the spread expected of a well-known voice
        distance = self.voices.distance(signature[None], centroids)[0] / self.voices.widening(counts)
        best = int(np.argmin(distance))
        if distance[best] <= self.voices.threshold or len(self._sums) >= self.max_voices:
            return best
        return len(self._sums)

    def update(self, stats: np.ndarray, commit: bool = True, audio: np.ndarray | None = None,
               signature: np.ndarray | None = None) -> tuple[np.ndarray, int | None]:
        """Assign one utterance and return (statistics to classify it with, voice); with `commit=False`
        the session is left as it was (an utterance that may still change). Committing the statistics
        of the last uncommitted update again reuses its signature, so its audio is not needed twice."""
        given = stats
        stats = np.asarray(stats, dtype=np.float32)
        stats = stats[0] if stats.ndim == 4 and stats.shape[0] == 1 else stats
        if self.voices is None:
            if not self._adapters:
                if not commit:
                    return SpeakerAdapter(self.window, self.prior).update(stats), None
                self._adapters.append(SpeakerAdapter(self.window, self.prior))
            return self._adapters[0].update(stats, commit), None
        if signature is None:
            if audio is None and self._tentative is not None and self._tentative[0] is given:
                signature = self._tentative[1]
            else:
                signature = self.voices.signature(stats, audio)
        signature = np.asarray(signature, dtype=np.float32)
        voice = self.assign(signature)
        if not commit:
            self._tentative = (given, signature)
            adapter = self._adapters[voice] if voice < len(self._adapters) else SpeakerAdapter(self.window, self.prior)
            return adapter.update(stats, commit=False), voice
        self._tentative = None
        if voice == len(self._sums):
            self._sums.append(np.zeros_like(signature))
            self._counts.append(0)
            self._adapters.append(SpeakerAdapter(self.window, self.prior))
        self._sums[voice] = self._sums[voice] + signature
        self._counts[voice] += 1
        return self._adapters[voice].update(stats), voice

    def statistics(self, voice: int | None) -> np.ndarray:
        """(1, 2, L, D) statistics of a voice's window as it is now (`update`'s voice; None without voices)."""
        if not self._adapters:
            raise ValueError("The tracker has heard no utterance yet.")
        return self._adapters[0 if voice is None else voice].statistics()

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()
        self._adapters.clear()
        self._tentative = None
