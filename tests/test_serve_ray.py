"""memocmt-serve as Ray Serve deployments on a local single-node Ray cluster (skipped without Ray)."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")

from tests.serve_helpers import load_real_engine, ravdess_stream, stream  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_server():
    import ray
    from ray import serve

    from memocmt.serve.ray_app import RayOptions, build

    load_real_engine().close()  # skips when the shipped models are not available here
    port = _free_port()
    ray.init(num_cpus=4, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(RayOptions(max_batch=4, threads=1)), name="memocmt-test", route_prefix="/")
        yield f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_gateway_streams_real_speech(ray_server, ravdess_dir):
    import json
    import threading
    import urllib.request

    url, http = ray_server
    results = {}

    def run(actor):
        results[actor] = stream(url, ravdess_stream(ravdess_dir, actor, ["angry", "sad"]), speed=0.0, timeout=120)

    threads = [threading.Thread(target=run, args=(actor,)) for actor in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for actor, messages in results.items():
        assert messages[0]["type"] == "ready"
        utterances = [m for m in messages if m["type"] == "utterance"]
        assert len(utterances) == 2, [u["text"] for u in utterances]
        assert all(any(w in u["text"].lower() for w in ("kids", "dogs", "talking", "sitting", "door")) for u in utterances), \
            [u["text"] for u in utterances]
        assert messages[-1]["type"] == "done" and utterances[0]["speaker"] == 0
    health = json.loads(urllib.request.urlopen(http + "/healthz", timeout=10).read())
    assert health["status"] == "ok" and health["asr_context"] == "full"
