"""memocmt-serve on Ray Serve: the same gateway and models as deployments that scale out.

    Gateway        the FastAPI app of memocmt.serve.app (page, /healthz, /metrics, /ws); each
                   socket's session state (VAD, voices, summary) stays on the replica it reached
    EmotionWorker  the ONNX bundle; encode_audio / encode_text / classify batch across every
                   gateway replica with @serve.batch; `num_gpus` places it on a GPU node
    AsrWorker      faster-whisper; @serve.batch gathers utterances, one replica decodes them in turn

Start everything with one command (a local Ray cluster unless RAY_ADDRESS names one):

    memocmt-serve-ray --port 8000 --emotion-gpus 0.5 --asr-gpus 0.5

Needs the `ray` extra: pip install 'memocmt-live[ray,serve]'. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from fastapi import FastAPI
    from ray import serve
except ImportError as e:  # the module is importable only with the extras; say which one
    raise ImportError(f"memocmt.serve.ray_app needs {e.name}; pip install 'memocmt-live[ray,serve]'.", name=e.name) from e

log = logging.getLogger("memocmt")


@dataclass
class RayOptions:
    """Replicas, placement and batching of the deployments."""

    model: str | None = None  # bundle directory (None: the runtime's default bundle)
    asr_model: str | None = None
    emotion_gpus: float = 0.0  # GPU share per emotion replica (0: CPU)
    asr_gpus: float = 0.0
    emotion_replicas: tuple[int, int] = (1, 1)  # autoscaling min, max
    asr_replicas: tuple[int, int] = (1, 1)
    gateway_replicas: int = 1
    max_batch: int = 8
    batch_wait_s: float = 0.005
    max_sessions: int = 8  # per gateway replica
    threads: int = 0  # CPU threads per model replica (0: the libraries' defaults)


def _autoscaling(bounds: tuple[int, int]) -> dict:
    low, high = bounds
    return {"min_replicas": low, "max_replicas": max(low, high), "target_ongoing_requests": 4}


@serve.deployment(max_ongoing_requests=256)
class EmotionWorker:
    def __init__(self, options: RayOptions):
        from memocmt.live.pipeline import load_emotion_model
        from memocmt.serve.engine import BundleBackend

        device = "cuda" if options.emotion_gpus > 0 else "cpu"
        loaded = load_emotion_model(options.model, device, options.threads or None)
        self.backend = BundleBackend(loaded.bundle)
        self.encode_audio.set_max_batch_size(options.max_batch)
        self.encode_text.set_max_batch_size(options.max_batch)
        self.classify.set_max_batch_size(options.max_batch)

    def describe(self) -> dict:
        bundle = self.backend.bundle
        return {"labels": self.backend.labels, "name": self.backend.name, "speaker_norm": bool(bundle.speaker_norm),
                "voices": bundle.voices, "prior": bundle.speaker_prior, "adapt_window": self.backend.adapt_window}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def encode_audio(self, audios: list[np.ndarray]) -> list[tuple[Any, Any]]:
        encodings = await asyncio.to_thread(self.backend.encode_audio_batch, audios)
        return [(e, self.backend.audio_stats(e)) for e in encodings]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def encode_text(self, texts: list[str]) -> list[Any]:
        return await asyncio.to_thread(self.backend.encode_text_batch, texts)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def classify(self, items: list[tuple]) -> list[Any]:
        return await asyncio.to_thread(self.backend.classify_batch, items)


@serve.deployment(max_ongoing_requests=256)
class AsrWorker:
    def __init__(self, options: RayOptions):
        from memocmt.live.asr import AsrConfig, Transcriber

        device = "cuda" if options.asr_gpus > 0 else "cpu"
        self.transcriber = Transcriber(AsrConfig(model=options.asr_model, device=device, cpu_threads=options.threads,
                                                 context="full"))
        self.transcriber.warm_up()
        self.model_name = self.transcriber.model_name

    def describe(self) -> dict:
        return {"model_name": self.model_name, "language": self.transcriber.language,
                "multilingual": self.transcriber.multilingual}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def transcribe(self, jobs: list[tuple[np.ndarray, str | None]]) -> list[Any]:
        """(audio, language) of utterances, each in its session's language."""
        return await asyncio.to_thread(lambda: [self.transcriber.transcribe(a, language) for a, language in jobs])


class RemoteEmotion:
    """EmotionBackend over an EmotionWorker handle (called from the gateway's batcher threads)."""

    audio_batchable = head_batchable = True  # the worker batches again across gateways

    def __init__(self, handle):
        self.handle = handle
        info = _off_loop(handle.describe)
        self.labels, self.name = info["labels"], info["name"]
        self._info = info

    def encode_audio_batch(self, audios):
        return [r.result() for r in [self.handle.encode_audio.remote(a) for a in audios]]

    def encode_text_batch(self, texts):
        return [r.result() for r in [self.handle.encode_text.remote(t) for t in texts]]

    def audio_stats(self, encoding):
        return encoding[1]

    def classify_batch(self, items):
        calls = [self.handle.classify.remote(item._replace(audio=item.audio[0])) for item in items]
        return [c.result() for c in calls]

    def hold(self, encoding):
        """A float16 host copy of an (encoding, statistics) pair, kept to classify the utterance again in hindsight."""
        from memocmt.live.hindsight import host_copy

        audio, stats = encoding
        return host_copy(audio, np.asarray), stats

    def new_tracker(self, speakers: str):
        if not self._info["speaker_norm"]:
            return None
        from memocmt.speakers import SpeakerTracker

        from memocmt.voice import tracker_voices

        voices = tracker_voices(self._info["voices"], speakers)
        return SpeakerTracker(voices, self._info["adapt_window"], self._info["prior"])

    def whisper_states(self, encoding):
        return None


class RemoteTranscriber:
    context = "full"

    def __init__(self, handle):
        self.handle = handle
        info = _off_loop(handle.describe)
        self.model_name, self.language, self.multilingual = info["model_name"], info["language"], info["multilingual"]

    def transcribe(self, audio: np.ndarray, language: str | None = None):
        return self.handle.transcribe.remote((audio, language)).result()


def _off_loop(method) -> Any:
    """Call a handle method and wait for it from a plain thread: a replica's constructor runs inside
    an event loop, where Ray refuses blocking waits."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: method.remote().result()).result()


class _Deferred:
    """An ASGI app forwarding to the application a gateway replica builds when it starts. The
    target is a class attribute: Serve ships the ingress app to the replica by value (a copy of
    this instance), but the class by reference, so the constructor and the copy share it."""

    target = None

    async def __call__(self, scope, receive, send):
        await _Deferred.target(scope, receive, send)


_replica_app = _Deferred()
ingress = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
ingress.mount("/", _replica_app)


@serve.deployment(max_ongoing_requests=1024)  # sockets are long-lived: the default would queue the 9th client
@serve.ingress(ingress)
class Gateway:
    def __init__(self, emotion, asr, options: RayOptions):
        from memocmt.serve.app import create_app
        from memocmt.serve.engine import Engine, EngineConfig
        from memocmt.serve.session import ServerConfig

        backend = RemoteEmotion(emotion)
        recognizer = RemoteTranscriber(asr)
        self.engine = Engine(backend, lambda context: recognizer, "full",
                             EngineConfig(max_batch=4 * options.max_batch, batch_wait_ms=1.0))
        _Deferred.target = create_app(self.engine, ServerConfig(max_sessions=options.max_sessions))


def build(options: RayOptions):
    """The application graph, ready for serve.run."""
    emotion = EmotionWorker.options(
        ray_actor_options={"num_gpus": options.emotion_gpus, "num_cpus": 1},
        autoscaling_config=_autoscaling(options.emotion_replicas),
    ).bind(options)
    asr = AsrWorker.options(
        ray_actor_options={"num_gpus": options.asr_gpus, "num_cpus": 1},
        autoscaling_config=_autoscaling(options.asr_replicas),
    ).bind(options)
    return Gateway.options(num_replicas=options.gateway_replicas, ray_actor_options={"num_cpus": 0.5}).bind(
        emotion, asr, options)


def _bounds(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def cli(argv: list[str] | None = None) -> int:
    import ray

    p = argparse.ArgumentParser(prog="memocmt-serve-ray", description="memocmt-serve as Ray Serve deployments.")
    p.add_argument("--host", default="127.0.0.1", help="address of Serve's HTTP proxy (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", help="exported bundle (default: the runtime's default bundle)")
    p.add_argument("--asr-model", help="faster-whisper model (default: offline tiny.en)")
    p.add_argument("--emotion-gpus", type=float, default=0.0, help="GPU share per emotion replica (default: 0, CPU)")
    p.add_argument("--asr-gpus", type=float, default=0.0, help="GPU share per ASR replica (default: 0, CPU)")
    p.add_argument("--emotion-replicas", default="1", help="replicas, or MIN-MAX to autoscale (default: 1)")
    p.add_argument("--asr-replicas", default="1", help="replicas, or MIN-MAX to autoscale (default: 1)")
    p.add_argument("--gateways", type=int, default=1, help="gateway replicas (each holds its sockets' sessions)")
    p.add_argument("--max-sessions", type=int, default=8, help="sessions per gateway replica (default: 8)")
    p.add_argument("--max-batch", type=int, default=8)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("memocmt-serve-ray: WARNING: the Ray gateway has no token check; put it behind a proxy that authenticates.",
              file=sys.stderr)
    options = RayOptions(model=args.model, asr_model=args.asr_model, emotion_gpus=args.emotion_gpus,
                         asr_gpus=args.asr_gpus, emotion_replicas=_bounds(args.emotion_replicas),
                         asr_replicas=_bounds(args.asr_replicas), gateway_replicas=args.gateways,
                         max_batch=args.max_batch, max_sessions=args.max_sessions)
    ray.init()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build(options), name="memocmt", route_prefix="/")
    print(f"memocmt-serve-ray: serving http://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while True:
            asyncio.run(asyncio.sleep(3600))
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
