"""Result types shared by the PyTorch model, the ONNX runtime and the live pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Prediction:
    """The emotion of one utterance."""

    label: str  # most probable class
    confidence: float  # its probability
    probabilities: dict[str, float]  # every class, in the model's label order
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage name -> milliseconds
    speaker: int | None = None  # live speaker tracking (memocmt.speakers): the session's voice 0, 1, ... that said it
    # whether the transcript was read: False when the utterance's language is not one the model reads and it was
    # classified from its audio alone (memocmt.language_policy); None where the caller did not say
    read_text: bool | None = None

    @property
    def runner_up(self) -> tuple[str, float]:
        """The second most probable class and its probability."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: kv[1], reverse=True)
        return ranked[1] if len(ranked) > 1 else ranked[0]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "timings_ms": dict(self.timings_ms),
            "speaker": self.speaker,
            "read_text": self.read_text,
        }

    @classmethod
    def from_probabilities(cls, labels: list[str], probs, timings_ms: dict[str, float] | None = None) -> "Prediction":
        """Build from a label list and a matching 1-D sequence of probabilities."""
        values = [float(p) for p in probs]
        if len(values) != len(labels):
            raise ValueError(f"{len(values)} probabilities for {len(labels)} labels.")
        best = max(range(len(values)), key=values.__getitem__)
        return cls(
            label=labels[best],
            confidence=values[best],
            probabilities=dict(zip(labels, values)),
            timings_ms=dict(timings_ms or {}),
        )
