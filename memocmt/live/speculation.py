"""Utterances on their way from the VAD to recognition, and results recognised ahead of time.

With `VadConfig.speculate_ms` the VAD sends an utterance ahead as `tentative` before the
hangover ends. A recognition stage (the thread of memocmt.live.pipeline, a session task of
memocmt.serve.session) recognises a tentative only when nothing newer waits, holds its result
in a `Speculation`, and when the final segment covers the same speech, `reuse`s that result
instead of recognising the utterance again. Latencies are timed from `Pending`'s clocks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from memocmt.audio import SAMPLE_RATE
from memocmt.live.summary import UtteranceResult
from memocmt.live.vad import Segment


@dataclass
class Pending:
    """An utterance the VAD closed, waiting for recognition."""

    segment: Segment
    eos_wall: float  # monotonic time the end of speech arrived (estimated from the block's arrival)
    emitted: float  # monotonic time the VAD closed the utterance

    @classmethod
    def closed(cls, segment: Segment, arrival: float, block_end: int) -> Pending:
        """`segment`, closed now by the VAD in a block whose last sample, `block_end`, arrived at `arrival`."""
        # speech ended (block_end - end) samples before the block's last sample
        eos_wall = arrival - max(0, block_end - round(segment.end_s * SAMPLE_RATE)) / SAMPLE_RATE
        return cls(segment, eos_wall, time.monotonic())

    def wait_ms(self, now: float) -> dict[str, float]:
        """The utterance's latency before recognition starts at `now`: from the end of speech to the VAD
        closing it ("vad_wait"), and from then on ("queue"), in milliseconds."""
        return {"vad_wait": (self.emitted - self.eos_wall) * 1000, "queue": (now - self.emitted) * 1000}


@dataclass
class Speculated:
    """A tentative segment and what recognising it gave (None: no words)."""

    segment: Segment
    result: UtteranceResult | None


class Speculation:
    """The last tentative utterance recognised ahead of the hangover, held until its final segment arrives."""

    def __init__(self) -> None:
        self._held: Speculated | None = None

    def hold(self, tentative: Segment, result: UtteranceResult | None) -> None:
        self._held = Speculated(tentative, result)

    def take(self, final: Segment) -> Speculated | None:
        """Forget what is held, and return it when it covers the same speech as `final`."""
        held, self._held = self._held, None
        return held if held is not None and held.segment.same_speech(final) else None


def reuse(result: UtteranceResult, item: Pending) -> UtteranceResult:
    """The result of a tentative as the result of its final segment `item`: marked speculative,
    with the final's forced split and its latencies."""
    result.speculative = True
    result.forced_split = item.segment.forced
    now = time.monotonic()
    result.timings_ms.update(item.wait_ms(now))
    result.timings_ms["eos_to_result"] = (now - item.eos_wall) * 1000
    return result
