"""Soak test: a long generated session through the file path, checking memory and lag stay flat.

Writes `--minutes` of audio (espeak-ng utterances, random 0.5-3 s gaps, light noise) to a
WAV in blocks, runs it through the live pipeline (as fast as possible by default, or paced
in real time with --realtime), samples RSS as results arrive, and prints a JSON summary:
RSS at start, after warm-up, at the end and the peak; ASR time and end-of-speech latency in
the first and last tenth of the session (growth there means lag builds up).

    python benchmarks/soak.py --minutes 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_session(path: Path, minutes: float, seed: int) -> int:
    """Stream a session to `path` without holding it in memory; returns the utterance count."""
    import soundfile as sf

    from live_latency import SENTENCES, espeak
    from memocmt.audio import SAMPLE_RATE

    rng = np.random.default_rng(seed)
    speech = [espeak(s) for s in SENTENCES]
    total = int(minutes * 60 * SAMPLE_RATE)
    written = count = 0
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        while written < total:
            gap = np.zeros(int(rng.uniform(0.5, 3.0) * SAMPLE_RATE), dtype=np.float32)
            chunk = np.concatenate([gap, speech[count % len(speech)] * rng.uniform(0.5, 1.0)])
            chunk = chunk + rng.normal(0, 0.002, len(chunk)).astype(np.float32)
            chunk = np.clip(chunk[: total - written], -1, 1)
            f.write(chunk)
            written += len(chunk)
            count += 1
    return count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the generated session (default: 30)")
    p.add_argument("--realtime", action="store_true", help="pace the file in real time (takes --minutes of wall time)")
    p.add_argument("--vad", choices=["webrtc", "silero"], default="webrtc", help="VAD (default: webrtc)")
    p.add_argument("--model", help="emotion bundle directory (default: none, ASR only)")
    p.add_argument("--seed", type=int, default=0, help="random seed for gaps and noise")
    args = p.parse_args()

    from benchmarks.machine import machine_info
    from benchmarks.worker import peak_rss_mb, rss_mb
    from memocmt.live.asr import AsrConfig, Transcriber
    from memocmt.live.capture import FileSource
    from memocmt.live.pipeline import Pipeline, PipelineConfig, load_emotion_model
    from memocmt.live.vad import Segmenter, VadConfig, make_classifier

    rss_start = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "soak.wav"
        played = write_session(path, args.minutes, args.seed)
        vad = VadConfig(backend=args.vad)
        transcriber = Transcriber(AsrConfig())
        emotion = load_emotion_model(args.model) if args.model else None
        if emotion is not None:
            transcriber.attach_encoder(emotion.bundle.whisper_encoder())
        transcriber.warm_up()
        pipeline = Pipeline(FileSource(path, realtime=args.realtime), Segmenter(make_classifier(vad), vad),
                            transcriber, emotion, PipelineConfig(live=args.realtime))
        rss_loaded = rss_mb()
        samples: list[tuple[float, float]] = []  # (stream time s, RSS MB)
        asr, latency, t0 = [], [], time.perf_counter()
        pipeline.start()
        for result in pipeline.results():  # not run(): that keeps every result (and its audio)
            asr.append(result.timings_ms.get("asr", 0.0))
            latency.append(result.timings_ms["eos_to_result"])
            if result.index % 25 == 0:
                samples.append((result.end_s, rss_mb()))
        wall_s = time.perf_counter() - t0
    summary = pipeline.session_summary()
    tenth = max(1, len(asr) // 10)
    report = {
        "benchmark": "soak",
        "machine": machine_info(),
        "config": {"minutes": args.minutes, "realtime": args.realtime, "vad": args.vad,
                   "asr_model": transcriber.model_name, "emotion_model": args.model,
                   "asr_context": transcriber.context, "asr_fallbacks": transcriber.fallbacks},
        "utterances_played": played,
        "utterances_recognised": summary.utterances,
        "audio_s": summary.audio_s,
        "wall_s": round(wall_s, 1),
        "speed_x_realtime": round(summary.audio_s / wall_s, 2),
        "rss_mb": {
            "start": round(rss_start, 1),
            "models_loaded": round(rss_loaded, 1),
            "first_sample": round(samples[0][1], 1) if samples else None,
            "end": round(rss_mb(), 1),
            "peak": round(peak_rss_mb(), 1),
            "samples": [(round(t), round(m, 1)) for t, m in samples[:: max(1, len(samples) // 20)]],
        },
        "asr_ms_median": {"first_tenth": float(np.median(asr[:tenth])), "last_tenth": float(np.median(asr[-tenth:]))},
        "eos_to_result_ms_median": {"first_tenth": float(np.median(latency[:tenth])),
                                    "last_tenth": float(np.median(latency[-tenth:]))},
        "peak_lag_s": summary.peak_lag_s,
        "dropped_audio_s": summary.dropped_audio_s,
        "dropped_utterances": summary.dropped_utterances,
        "latency_ms": summary.latency_ms,
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here.parent), str(here)]  # run from a checkout
    main()
