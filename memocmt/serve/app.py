"""The FastAPI application: the page at `/`, `/healthz`, `/metrics` and the `memocmt.v1` socket at `/ws`.

One asyncio loop serves every socket; audio decoding and VAD run on it (cheap), the models
on the `Engine`'s worker threads. Every session is bounded: its frames (`max_frame_bytes`,
enforced by the websocket layer with close code 1009), its length (`max_session_s`), its
queue (`queue_depth`), its silence (`idle_timeout_s`) and its reading speed (a send that
takes longer than `send_timeout_s` ends that session only).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket  # the `serve` extra; FastAPI resolves the handlers' annotations here
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect

from memocmt.live.display import jsonl_record
from memocmt.live.vad import Segmenter, make_classifier
from memocmt.serve import protocol
from memocmt.serve.engine import Engine
from memocmt.serve.metrics import ServeMetrics
from memocmt.serve.protocol import ProtocolError, StartOptions
from memocmt.serve.session import ServerConfig, StreamSession

log = logging.getLogger("memocmt")

STATIC_DIR = Path(__file__).with_name("static")


class _SlowClient(Exception):
    pass


class _Gone(Exception):
    pass


def authorized(token: str | None, headers, query) -> bool:
    if not token:
        return True
    offered = query.get("token") or ""
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        offered = auth[7:].strip()
    return hmac.compare_digest(offered.encode(), token.encode())


def create_app(engine: Engine, config: ServerConfig | None = None, metrics: ServeMetrics | None = None):
    config = config or ServerConfig()
    config.vad.validate()
    metrics = metrics or engine.metrics or ServeMetrics()
    engine.metrics = metrics
    app = FastAPI(title="MemoCMT Live", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.config, app.state.metrics = engine, config, metrics
    app.state.active = 0
    started = time.time()

    @app.get("/")
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz")
    async def healthz():
        queues = {name: getattr(engine, f"{name}_batcher").queued for name in ("audio", "text", "fusion")
                  if getattr(engine, f"{name}_batcher") is not None}
        if engine.asr_queue is not None:
            queues["asr"] = engine.asr_queue.queued
        return {"status": "ok", "protocol": protocol.PROTOCOL, "sessions": app.state.active,
                "max_sessions": config.max_sessions, "labels": engine.labels, "uptime_s": round(time.time() - started, 1),
                "queues": queues, **engine.meta()}

    @app.get("/metrics")
    async def prometheus(request: Request):
        if not authorized(config.token, request.headers, request.query_params):
            return JSONResponse({"error": "A valid token is required."}, status_code=401)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.websocket("/ws")
    async def stream(ws: WebSocket):
        if not authorized(config.token, ws.headers, ws.query_params):
            await ws.close(code=protocol.CLOSE_POLICY)  # before accept: the handshake is refused (HTTP 403)
            return
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=protocol.PROTOCOL if protocol.PROTOCOL in offered else None)
        if app.state.active >= config.max_sessions:
            metrics.sessions_rejected.inc()
            try:
                await ws.send_text(json.dumps(protocol.busy(config.max_sessions)))
                await ws.close(code=protocol.CLOSE_TRY_AGAIN, reason="busy")
            except (WebSocketDisconnect, RuntimeError):
                pass
            return
        app.state.active += 1
        metrics.sessions_active.inc()
        try:
            await _serve(ws, engine, config, metrics)
        finally:
            app.state.active -= 1
            metrics.sessions_active.dec()

    return app


async def _serve(ws: WebSocket, engine: Engine, config: ServerConfig, metrics: ServeMetrics) -> None:
    lock = asyncio.Lock()

    async def send(message: dict) -> None:
        async with lock:
            try:
                await asyncio.wait_for(ws.send_text(json.dumps(message, ensure_ascii=False)), config.send_timeout_s)
            except asyncio.TimeoutError:
                raise _SlowClient() from None
            except (WebSocketDisconnect, RuntimeError) as e:
                raise _Gone() from e

    async def refuse(text: str) -> None:
        metrics.protocol_errors.inc()
        await send(protocol.error(text))

    session: StreamSession | None = None
    close_code = protocol.CLOSE_NORMAL
    try:
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), config.idle_timeout_s)
            except asyncio.TimeoutError:
                await refuse(f"Nothing received for {config.idle_timeout_s:.0f} s; closing the session.")
                break
            if message["type"] == "websocket.disconnect":
                raise _Gone()
            if session is not None and session.failed:
                break  # recognition failed: reported below
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if session is None:
                    await refuse('Send a "start" message before any audio.')
                elif len(data) > config.max_frame_bytes:
                    await refuse(f"Audio frames are at most {config.max_frame_bytes} bytes.")
                else:
                    await session.feed(data)
                    if session.full:
                        await refuse(f"The session reached its maximum length of {config.limits.max_session_s:.0f} s "
                                     "of audio; start a new one.")
                        await session.stop("maximum session length")
                        break
                continue
            try:
                request = protocol.parse_message(text or "")
                if request["type"] == "start":
                    if session is not None:
                        raise ProtocolError("This session has already started; send stop, then open a new socket.")
                    options = StartOptions.parse(request)
                    session = _open_session(ws, options, engine, config, metrics, send)
                    await send(protocol.ready(session.id, engine.labels, session.meta))
                    session.start()
                elif session is None:
                    raise ProtocolError('Nothing to stop: send "start" first.')
                else:
                    await session.stop("stopped by the client")
                    break
            except ProtocolError as e:
                await refuse(str(e))
        if session is not None:
            await session.stop("idle")  # no-op when already stopped
            try:
                await session.finished()
            except (_Gone, _SlowClient):
                raise
            except Exception as e:  # a model failed: the client learns it in one sentence
                log.exception("session %s failed", session.id)
                await send(protocol.error(f"Recognition failed on the server: {e}"))
                close_code = protocol.CLOSE_INTERNAL
            else:
                await send(protocol.done(session.session_summary()))
        await ws.close(code=close_code)
    except _SlowClient:
        log.warning("session %s: the client stopped reading; closing it", getattr(session, "id", "-"))
        if session is not None:
            session.cancel()
        try:
            await ws.close(code=protocol.CLOSE_POLICY, reason="too slow")
        except Exception:  # the connection may already be unusable
            pass
    except (_Gone, WebSocketDisconnect):
        if session is not None:
            session.cancel()
            log.info("session %s: the client disconnected", session.id)
    except BaseException:
        if session is not None:
            session.cancel()
        raise


def _open_session(ws, options: StartOptions, engine: Engine, config: ServerConfig, metrics: ServeMetrics,
                  send) -> StreamSession:
    session_id = secrets.token_hex(6)
    segmenter = Segmenter(make_classifier(config.vad), config.vad)
    meta: dict = {}
    session = StreamSession(session_id, options, engine, segmenter, send,
                            record=lambda result: jsonl_record(result, meta), limits=config.limits, metrics=metrics)
    client = ws.client
    meta.update({"device": f"websocket {client.host if client else '?'} ({options.sample_rate} Hz, {options.format})",
                 **engine.meta(options.asr_context), "asr_language": session.language,  # its setting: a code or auto
                 "speaker_tracking": session.tracks_speakers})
    session.meta = meta
    metrics.sessions.inc()
    log.info("session %s started: %s", session_id, meta["device"])
    return session
