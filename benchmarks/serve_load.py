"""Load test of memocmt-serve: N concurrent clients streaming real speech in real time.

Starts two servers on 127.0.0.1 (emotion graphs batched across sessions, and one utterance
per graph call), then for each N runs N clients against each server in turn: every client
streams RAVDESS utterances of its own actor, separated by silence, paced in real time in
40 ms frames, with start times staggered. Latency is measured at the client: from the moment
the frame holding an utterance's last speech sample was sent to the moment its result
arrived (this includes the VAD's 300 ms hangover, as a user would see it). Reports p50/p95,
throughput, utterances lost (dropped by the server or never answered), batch sizes (from
/metrics), the servers' RSS, and the machine with its CPU flags.

    python benchmarks/serve_load.py --clients 1,2,4,8 --seconds 30 \
        --out benchmarks/results/serve/serve_load.json

Bounded: at most 16 clients, 120 s of speech per client, and a wall-clock limit per run.

A soak (`--soak-minutes M`, at most 60): one run of the largest --clients count against the batched
server, each client streaming M minutes (its actor's clips over and over); the server's RSS is
sampled every 30 s, and the latency of the first and last tenth of the utterances is reported,
so growth in either shows:

    python benchmarks/serve_load.py --clients 8 --soak-minutes 30 --modes batched \
        --out benchmarks/results/serve/soak_8x30min.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_CLIENTS = 16
MAX_SECONDS = 120.0
MAX_SOAK_MINUTES = 60.0
RSS_EVERY_S = 30.0
FRAME_MS = 40
GAP_S = 1.0
EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}


def client_audio(data_dir: Path, actor: int, seconds: float) -> tuple[np.ndarray, list[float]]:
    """An actor's utterances with GAP_S of silence around each; returns the audio and each utterance's end (s)."""
    from memocmt.audio import SAMPLE_RATE, load_audio

    files = sorted(f for f in (data_dir / f"Actor_{actor:02d}").glob("03-01-*.flac") if f.name[6:8] in EMOTIONS)
    if not files:
        raise SystemExit(f"No RAVDESS speech in {data_dir / f'Actor_{actor:02d}'}; pass --data.")
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    parts, ends, n = [gap], [], len(gap)
    rng = np.random.default_rng(actor)
    clips = [load_audio(f) for f in rng.permutation(files)]
    while n / SAMPLE_RATE < seconds:  # the actor's clips over and over for a long stream
        for clip in clips:
            parts += [clip, gap]
            n += len(clip)
            ends.append(n / SAMPLE_RATE)
            n += len(gap)
            if n / SAMPLE_RATE >= seconds:
                break
    return np.concatenate(parts), ends


def run_client(url: str, audio: np.ndarray, ends: list[float], delay_s: float, out: dict) -> None:
    """Stream in real time; record when each frame was sent and when each result arrived."""
    from websockets.sync.client import connect

    from memocmt.audio import SAMPLE_RATE
    from memocmt.serve.client import pcm16

    time.sleep(delay_s)
    frame = SAMPLE_RATE * FRAME_MS // 1000
    sent: list[float] = []
    results: list[tuple[float, dict]] = []
    done: dict = {}
    with connect(url, open_timeout=20, max_size=1 << 20) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "format": "pcm_s16le", "channels": 1}))
        ready = json.loads(ws.recv(20))
        if ready["type"] != "ready":
            out.update(error=ready)
            return

        def receive() -> None:
            while True:
                try:
                    message = json.loads(ws.recv(60))
                except Exception:  # closed or timed out: the run reports what arrived
                    return
                if message["type"] == "utterance":
                    results.append((time.monotonic(), message))
                elif message["type"] == "done":
                    done.update(message["summary"])
                    return

        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        t0 = time.monotonic()
        for i, start in enumerate(range(0, len(audio), frame)):
            wait = t0 + start / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            ws.send(pcm16(audio[start : start + frame]))
            sent.append(time.monotonic())
        ws.send(json.dumps({"type": "stop"}))
        reader.join(60)
    latencies, matched = [], set()
    for arrived, message in results:
        # The utterance this result belongs to: the clip whose end is nearest the VAD's end of speech.
        k = int(np.argmin([abs(e - message["end_s"]) for e in ends]))
        if abs(ends[k] - message["end_s"]) > 0.8 or k in matched:
            continue
        matched.add(k)
        frame_index = min(len(sent) - 1, int(message["end_s"] * SAMPLE_RATE) // frame)
        latencies.append(arrived - sent[frame_index])
    out.update(latencies=latencies, utterances=len(ends), answered=len(matched), results=len(results), summary=done,
               stages=[m["timings_ms"] for _, m in results])


def scrape(http: str) -> dict:
    """Batch-size sums and counts per graph, and dropped utterances, from /metrics."""
    import urllib.request

    text = urllib.request.urlopen(http + "/metrics", timeout=10).read().decode()
    out: dict = {}
    for kind, graph, value in re.findall(r'memocmt_batch_size_(sum|count)\{graph="(\w+)"\} ([0-9.e+]+)', text):
        out.setdefault(graph, {})[kind] = float(value)
    dropped = re.search(r"memocmt_dropped_utterances_total ([0-9.e+]+)", text)
    out["dropped_utterances"] = float(dropped.group(1)) if dropped else 0.0
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """memocmt-serve in a subprocess on 127.0.0.1."""

    def __init__(self, name: str, extra: list[str], max_sessions: int):
        self.name = name
        self.port = free_port()
        cmd = [sys.executable, "-m", "memocmt.serve.cli", "--port", str(self.port), "--max-sessions", str(max_sessions),
               *extra]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/ws"

    def wait(self, timeout: float = 180) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the {self.name} server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(self.http + "/healthz", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"the {self.name} server did not start within {timeout:.0f} s")

    def rss_mb(self) -> float:
        import psutil

        return round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run(server: Server, n: int, audios: list, wall_limit_s: float) -> dict:
    before = scrape(server.http)
    outs = [dict() for _ in range(n)]
    threads = [threading.Thread(target=run_client, args=(server.ws, audios[i][0], audios[i][1], 0.37 * i, outs[i]),
                                daemon=True) for i in range(n)]
    start = time.monotonic()
    rss_peak = server.rss_mb()
    rss_timeline = [(0.0, rss_peak)]  # (s, MB) every RSS_EVERY_S
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and time.monotonic() - start < wall_limit_s:
        time.sleep(0.5)
        rss = server.rss_mb()
        rss_peak = max(rss_peak, rss)
        if time.monotonic() - start >= rss_timeline[-1][0] + RSS_EVERY_S:
            rss_timeline.append((round(time.monotonic() - start, 1), rss))
    wall = time.monotonic() - start
    after = scrape(server.http)
    latencies = [x for o in outs for x in o.get("latencies", [])]
    utterances = sum(o.get("utterances", 0) for o in outs)
    answered = sum(o.get("answered", 0) for o in outs)
    dropped = int(after["dropped_utterances"] - before["dropped_utterances"])
    batches = {}
    for graph in ("audio", "text", "fusion"):
        s = after.get(graph, {}).get("sum", 0) - before.get(graph, {}).get("sum", 0)
        c = after.get(graph, {}).get("count", 0) - before.get(graph, {}).get("count", 0)
        batches[graph] = {"mean": round(s / c, 2) if c else None, "calls": int(c)}
    audio_s = sum(len(a[0]) for a in audios[:n]) / 16000
    stages = {}  # server-side per-stage times, ms
    for key in ("vad_wait", "queue", "asr", "audio_encode", "emotion", "eos_to_result"):
        values = [t[key] for o in outs for t in o.get("stages", []) if key in t]
        if values:
            stages[key] = {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}
    return {
        "clients": n, "server": server.name, "wall_s": round(wall, 1), "audio_s": round(audio_s, 1),
        "utterances": utterances, "answered": answered, "dropped_by_server": dropped, "lost": utterances - answered,
        "p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "max_s": round(float(np.max(latencies)), 3) if latencies else None,
        "throughput_utt_per_s": round(answered / wall, 2), "batch_size": batches, "server_stages_ms": stages,
        "rss_mb_peak": rss_peak, "rss_mb_timeline": rss_timeline, "timed_out": any(t.is_alive() for t in threads),
        "p95_s_first_tenth": _tenth_p95(outs, first=True), "p95_s_last_tenth": _tenth_p95(outs, first=False),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],  # other work on the machine shows here
        "errors": [o["error"] for o in outs if "error" in o],
    }


def _tenth_p95(outs: list[dict], first: bool) -> float | None:
    """p95 latency (s) over the first or last tenth of each client's utterances."""
    values = []
    for o in outs:
        latencies = o.get("latencies", [])
        k = max(1, len(latencies) // 10)
        values += latencies[:k] if first else latencies[-k:]
    return round(float(np.percentile(values, 95)), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import machine_info

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="1,2,4,8", help="comma-separated client counts (each at most 16)")
    p.add_argument("--seconds", type=float, default=30.0, help="speech stream per client, seconds (at most 120)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ravdess-a01-a20"), help="RAVDESS folder")
    p.add_argument("--modes", default="batched,unbatched", help="servers to compare: batched, unbatched")
    p.add_argument("--out", help="write the JSON results here")
    p.add_argument("--server-args", default="", help="more memocmt-serve options for every server, e.g. '--language en'")
    p.add_argument("--soak-minutes", type=float, help=f"one long run of the largest client count instead (at most "
                                                      f"{MAX_SOAK_MINUTES:.0f})")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    if not counts or min(counts) < 1 or max(counts) > MAX_CLIENTS:
        p.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    if args.soak_minutes is not None:
        if not 1 <= args.soak_minutes <= MAX_SOAK_MINUTES:
            p.error(f"--soak-minutes must be between 1 and {MAX_SOAK_MINUTES:.0f}")
        counts, args.seconds = [max(counts)], args.soak_minutes * 60
    elif not 5 <= args.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be between 5 and {MAX_SECONDS:.0f}")
    data = Path(args.data)
    audios = [client_audio(data, 1 + i % 20, args.seconds) for i in range(max(counts))]
    modes = {"batched": [], "unbatched": ["--no-batching"]}
    chosen = [m for m in args.modes.split(",") if m]
    servers = {m: Server(m, shlex.split(args.server_args) + modes[m], max(counts)) for m in chosen}
    record = {"machine": machine_info(), "command": "python benchmarks/serve_load.py " + " ".join(argv or sys.argv[1:]),
              "frame_ms": FRAME_MS, "gap_s": GAP_S, "runs": []}
    try:
        for s in servers.values():
            s.wait()
        record["rss_mb_idle"] = {m: s.rss_mb() for m, s in servers.items()}
        for n in counts:
            for mode, server in servers.items():
                result = run(server, n, audios, wall_limit_s=args.seconds * 1.5 + 60)
                record["runs"].append(result)
                print(json.dumps({k: result[k] for k in ("clients", "server", "p50_s", "p95_s", "lost", "dropped_by_server",
                                                        "throughput_utt_per_s", "rss_mb_peak")}), flush=True)
                print("   batch sizes:", result["batch_size"], flush=True)
    finally:
        for s in servers.values():
            s.stop()
    ok = [r["clients"] for r in record["runs"] if r["server"] == "batched" and r["p95_s"] is not None
          and r["p95_s"] <= 1.0 and r["lost"] == 0 and r["dropped_by_server"] == 0]
    record["largest_n_p95_under_1s_nothing_lost"] = max(ok) if ok else None
    by = {(r["server"], r["clients"]): r for r in record["runs"]}
    gains = {}
    for n in counts:
        b, u = by.get(("batched", n)), by.get(("unbatched", n))
        if b and u and b["p95_s"] and u["p95_s"]:
            gains[n] = {"p95_unbatched_over_batched": round(u["p95_s"] / b["p95_s"], 2),
                        "p50_unbatched_over_batched": round(u["p50_s"] / b["p50_s"], 2)}
    record["batching_gain"] = gains
    print(json.dumps({"largest_n": record["largest_n_p95_under_1s_nothing_lost"], "batching_gain": gains}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
