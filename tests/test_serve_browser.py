"""The browser page in headless Debian Chromium (Playwright, no browser download), with a WAV
file of real speech as the microphone: utterances must appear in the timeline and the chart."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api")

from memocmt.audio import SAMPLE_RATE  # noqa: E402
from memocmt.serve.app import create_app  # noqa: E402
from memocmt.serve.session import ServerConfig  # noqa: E402
from tests.serve_helpers import ServerThread, load_real_engine, ravdess_stream  # noqa: E402

CHROMIUM = os.environ.get("MEMOCMT_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)),
                                reason=f"Chromium is not installed at {CHROMIUM}")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def open_browser(p, wav: Path | None):
    args = CHROMIUM_ARGS + ([f"--use-file-for-fake-audio-capture={wav}"] if wav else [])
    return p.chromium.launch(executable_path=CHROMIUM, args=args)


@pytest.fixture(scope="module")
def engine():
    engine = load_real_engine()
    yield engine
    engine.close()


def test_page_shows_utterances_from_the_microphone(engine, ravdess_dir, tmp_path):
    import soundfile as sf

    wav = tmp_path / "mic.wav"
    sf.write(str(wav), ravdess_stream(ravdess_dir, 1, ["angry", "happy", "sad"]), SAMPLE_RATE, subtype="PCM_16")
    with ServerThread(create_app(engine, ServerConfig(max_sessions=2))) as server, \
            playwright_api.sync_playwright() as p:
        browser = open_browser(p, wav)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.http + "/")
            page.click("#start")
            page.wait_for_function("document.querySelectorAll('tr.utterance').length >= 2", timeout=40000)
            rows = page.locator("tr.utterance").all_inner_texts()
            assert any(w in r.lower() for r in rows for w in ("kids", "dogs", "talking", "sitting")), rows
            assert any(label in " ".join(rows) for label in engine.labels)
            assert "Listening" in page.inner_text("#status")
            assert page.evaluate("chart.points.length") >= 2
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            page.click("#stop")
            page.wait_for_selector("#summary:not([hidden])", timeout=20000)
            assert "utterances:" in page.inner_text("#summary-text")
            assert not errors, errors
        finally:
            browser.close()


def test_page_says_when_the_server_is_busy(engine, tmp_path):
    from websockets.sync.client import connect

    with ServerThread(create_app(engine, ServerConfig(max_sessions=1))) as server, \
            playwright_api.sync_playwright() as p, connect(server.ws) as holder:
        holder.send('{"type": "start"}')
        holder.recv(10)
        browser = open_browser(p, None)
        try:
            page = browser.new_page()
            page.goto(server.http + "/")
            page.click("#start")
            page.wait_for_selector("#notice:not([hidden])", timeout=20000)
            assert "busy" in page.inner_text("#notice")
        finally:
            browser.close()


def test_page_says_when_the_microphone_is_denied(engine, tmp_path):
    with ServerThread(create_app(engine, ServerConfig())) as server, playwright_api.sync_playwright() as p:
        args = [a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"] + ["--deny-permission-prompts"]
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(server.http + "/")
            page.click("#start")
            page.wait_for_selector("#notice:not([hidden])", timeout=20000)
            assert "denied" in page.inner_text("#notice")
            assert page.is_enabled("#start")
        finally:
            browser.close()
