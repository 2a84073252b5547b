"""memocmt-serve: many live streams on one machine, over a websocket (protocol `memocmt.v1`).

    protocol.py  the messages a client and the server exchange, parsed and built
    batcher.py   a micro-batcher (emotion graphs across sessions) and a fair queue (ASR)
    engine.py    the shared models: Whisper and the ONNX bundle behind those queues
    session.py   one stream's own state: PCM decoding, resampling, VAD, voices, summary
    metrics.py   Prometheus counters and histograms
    app.py       the FastAPI application: /, /healthz, /metrics, /ws
    cli.py       the `memocmt-serve` command
    client.py    `memocmt-live --server URL`: a microphone or file streamed to a server
    ray_app.py   the same service as Ray Serve deployments (optional)
"""
