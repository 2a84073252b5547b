"""Prometheus metrics of one server (its own registry, so several servers can share a process)."""

from __future__ import annotations

from memocmt.live.summary import LATENCY_KEYS

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class ServeMetrics:
    def __init__(self):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as e:
            raise RuntimeError("memocmt-serve needs prometheus-client; pip install 'memocmt-live[serve]'.") from e
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("memocmt_sessions_active", "Websocket sessions streaming now", registry=r)
        self.sessions = Counter("memocmt_sessions", "Sessions started", registry=r)
        self.sessions_rejected = Counter("memocmt_sessions_rejected", "Connections refused as busy", registry=r)
        self.utterances = Counter("memocmt_utterances", "Utterances recognised and sent", registry=r)
        self.audio = Counter("memocmt_audio_seconds", "Audio received, seconds at 16 kHz", registry=r)
        self.dropped_audio = Counter("memocmt_dropped_audio_seconds",
                                     "Audio of utterances dropped because recognition fell behind", registry=r)
        self.dropped_utterances = Counter("memocmt_dropped_utterances", "Utterances dropped unrecognised", registry=r)
        self.protocol_errors = Counter("memocmt_protocol_errors", "Client messages answered with an error", registry=r)
        self.latency = Histogram("memocmt_stage_latency_seconds", "Per-utterance latency by pipeline stage",
                                 ["stage"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("memocmt_batch_size", "Utterances per model call", ["graph"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("memocmt_batch_seconds", "Time of one batched model call", ["graph"],
                                       buckets=LATENCY_BUCKETS_S, registry=r)

    def utterance(self, timings_ms: dict[str, float]) -> None:
        self.utterances.inc()
        for stage in LATENCY_KEYS:
            if stage in timings_ms:
                self.latency.labels(stage).observe(max(0.0, timings_ms[stage]) / 1000.0)

    def batch(self, graph: str, size: int, seconds: float) -> None:
        self.batch_size.labels(graph).observe(size)
        self.batch_seconds.labels(graph).observe(seconds)

    def audio_received(self, seconds: float) -> None:
        self.audio.inc(seconds)

    def dropped(self, seconds: float) -> None:
        self.dropped_utterances.inc()
        self.dropped_audio.inc(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
