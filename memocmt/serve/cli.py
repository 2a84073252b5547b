"""`memocmt-serve`: many live streams on one machine (FastAPI + uvicorn).

    memocmt-serve                                 # http://127.0.0.1:8765/ and ws://127.0.0.1:8765/ws
    memocmt-serve --host 0.0.0.0 --token SECRET   # other machines may connect, with the token

Problems a user can fix end the program with one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from memocmt.live.cli import ModelOptions, add_shared_option, configure_logging
from memocmt.live.errors import LiveError

PROG = "memocmt-serve"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def load_engine(options: ModelOptions, config=None, metrics=None):
    """Load the shared models and start their queues; raises LiveError with one sentence."""
    from memocmt.live.asr import Transcriber
    from memocmt.serve.engine import BundleBackend, Engine

    backend = None
    if not options.no_emotion:
        backend = BundleBackend(options.load_emotion().bundle, options.adapt_window)
    engine_ref: list = []

    def make_transcriber(context: str):
        transcriber = Transcriber(options.asr_config(context, backend.bundle if backend is not None else None))
        if context == "short" and engine_ref:
            transcriber.attach_encoder(engine_ref[0].whisper_encoder())
        transcriber.warm_up()
        return transcriber

    engine = Engine(backend, None, options.asr_context, config, metrics)
    engine_ref.append(engine)
    engine.enable_asr(make_transcriber)
    return engine


def build_parser() -> argparse.ArgumentParser:
    from memocmt.serve.engine import EngineConfig
    from memocmt.serve.session import ServerConfig, SessionLimits

    s, e, lim = ServerConfig(), EngineConfig(), SessionLimits()
    p = argparse.ArgumentParser(prog=PROG, description="Serve realtime speech emotion recognition to many websocket "
                                                       "clients and a browser page (protocol memocmt.v1).")
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    net.add_argument("--port", type=int, default=8765, help="TCP port (default: 8765)")
    net.add_argument("--token", default=os.environ.get("MEMOCMT_TOKEN"),
                     help="clients must send this token (Authorization: Bearer ... or ?token=); default $MEMOCMT_TOKEN")
    net.add_argument("--insecure", action="store_true", help="allow another address than loopback without a token")
    lim_g = p.add_argument_group("limits")
    lim_g.add_argument("--max-sessions", type=int, default=s.max_sessions, help=f"sessions at once (default: {s.max_sessions})")
    lim_g.add_argument("--max-frame-bytes", type=int, default=s.max_frame_bytes,
                       help=f"largest websocket frame (default: {s.max_frame_bytes})")
    lim_g.add_argument("--max-session-s", type=float, default=lim.max_session_s,
                       help=f"audio one session may stream, in seconds (default: {lim.max_session_s:.0f})")
    lim_g.add_argument("--queue-depth", type=int, default=lim.queue_depth,
                       help=f"utterances waiting for recognition per session (default: {lim.queue_depth})")
    lim_g.add_argument("--idle-timeout-s", type=float, default=s.idle_timeout_s,
                       help=f"close a session that sends nothing for this long (default: {s.idle_timeout_s:.0f})")
    bat = p.add_argument_group("batching")
    bat.add_argument("--max-batch", type=int, default=e.max_batch, help=f"utterances per emotion graph call (default: {e.max_batch})")
    bat.add_argument("--batch-wait-ms", type=float, default=e.batch_wait_ms,
                     help=f"how long a call waits for more utterances (default: {e.batch_wait_ms:g})")
    bat.add_argument("--asr-max-batch", type=int, default=e.asr_max_batch,
                     help="utterances of different sessions Whisper decodes in one call when they are waiting "
                          f"together (default: {e.asr_max_batch}; 1: one at a time)")
    bat.add_argument("--no-batching", action="store_true", help="one utterance per graph call and per Whisper decoding")
    mod = p.add_argument_group("models")
    add_shared_option(mod, "--model", help="exported MemoCMT bundle (default: the runtime's default bundle)")
    add_shared_option(mod, "--no-emotion", help="transcripts only")
    add_shared_option(mod, "--emotion-device")
    add_shared_option(mod, "--emotion-threads", help="ONNX Runtime threads for the emotion model (default: runtime's)")
    add_shared_option(mod, "--asr-model", help="faster-whisper model size or directory (default: offline tiny.en)")
    add_shared_option(mod, "--asr-device")
    add_shared_option(mod, "--compute-type")
    add_shared_option(mod, "--asr-threads")
    add_shared_option(mod, "--asr-context", help="default ASR context of a session (a client may ask for the other)")
    mod.add_argument("--language", metavar="auto|en|pl|...",
                     help="spoken language of a session whose start message names none (default: auto, each session "
                          "detects its own; en for English-only .en models)")
    add_shared_option(mod, "--vad", help="VAD of every session (default: webrtc)")
    add_shared_option(mod, "--hangover-ms")
    add_shared_option(p, "-v", "--verbose")
    return p


def cli(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK and not args.token and not args.insecure:
        parser.error(f"listening on {args.host} lets other machines connect: pass --token SECRET, or --insecure")
    for name in ("max_sessions", "max_frame_bytes", "queue_depth", "max_batch", "asr_max_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.no_emotion and args.model:
        parser.error("--model and --no-emotion cannot be used together")
    configure_logging(PROG, args.verbose)
    if args.host not in LOOPBACK and not args.token:
        print(f"{PROG}: WARNING: listening on {args.host} without a token; anyone who can reach this port can use it.",
              file=sys.stderr)
    try:
        return _run(args)
    except LiveError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def batching_config(args):
    """The EngineConfig of the batching options; --no-batching: one utterance per graph call and per Whisper call."""
    from memocmt.serve.engine import EngineConfig

    if args.no_batching:
        return EngineConfig(max_batch=1, batch_wait_ms=args.batch_wait_ms, asr_max_batch=1)
    return EngineConfig(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, asr_max_batch=args.asr_max_batch)


def _run(args) -> int:
    try:
        import uvicorn

        from memocmt.serve.app import create_app
    except ImportError as e:
        raise LiveError(f"memocmt-serve needs {e.name}; pip install 'memocmt-live[serve]'.") from None
    from memocmt.live.vad import VadConfig
    from memocmt.serve.session import ServerConfig, SessionLimits

    vad = VadConfig(backend=args.vad, hangover_ms=args.hangover_ms)
    vad.validate()
    engine_config = batching_config(args)
    options = ModelOptions.from_args(args)
    print(f"{PROG}: loading models ...", file=sys.stderr, flush=True)
    engine = load_engine(options, engine_config)
    config = ServerConfig(max_sessions=args.max_sessions, max_frame_bytes=args.max_frame_bytes,
                          idle_timeout_s=args.idle_timeout_s, token=args.token, vad=vad,
                          limits=SessionLimits(queue_depth=args.queue_depth, max_session_s=args.max_session_s))
    app = create_app(engine, config)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"{PROG}: serving http://{host}:{args.port}/ (websocket ws://{host}:{args.port}/ws, protocol memocmt.v1)",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, ws_max_size=args.max_frame_bytes,
                    log_level="info" if args.verbose else "warning")
    finally:
        engine.close()
    return 0


def ray_cli(argv: list[str] | None = None) -> int:
    """`memocmt-serve-ray`: the same service as Ray Serve deployments (memocmt.serve.ray_app)."""
    try:
        from memocmt.serve import ray_app
    except ImportError as e:
        print(f"memocmt-serve-ray: {e}", file=sys.stderr)
        return 2
    return ray_app.cli(argv)


if __name__ == "__main__":
    sys.exit(cli())
