"""End-of-speech-to-result latency of the live pipeline, per stage, and per-utterance compute.

Generates ~3 s espeak-ng utterances separated by silence, plays them through the very same
pipeline as a microphone (a file source paced in real time, so the VAD hangover, queues and
threads behave as live), and prints a JSON summary with the machine it ran on:

    python benchmarks/live_latency.py                       # ASR only
    python benchmarks/live_latency.py --model BUNDLE_DIR    # with the ONNX emotion model
    python benchmarks/live_latency.py --model BUNDLE_DIR --denoise dfn3   # with the denoise stage

Compute (ASR, emotion) is also timed on its own: warm-up, then the median of repeats.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = [
    "Good morning, I am very happy to see you today.",
    "Why did you do that, I am so angry with you.",
    "Tomorrow we will walk along the river together.",
    "I really cannot believe how wonderful this evening was.",
    "Please leave me alone, I do not want to talk right now.",
    "The meeting has been moved to Thursday afternoon.",
]


def espeak(text: str) -> np.ndarray:
    from memocmt.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True, capture_output=True)
        return load_audio(wav)


def build(args, path: Path, realtime: bool):
    from memocmt.live.asr import AsrConfig, Transcriber
    from memocmt.live.capture import FileSource
    from memocmt.live.denoise import make_denoise_stage, parse_targets
    from memocmt.live.pipeline import Pipeline, PipelineConfig, load_emotion_model
    from memocmt.live.vad import Segmenter, VadConfig, make_classifier

    vad = VadConfig(backend=args.vad, hangover_ms=args.hangover_ms, speculate_ms=args.speculate_ms)
    transcriber = Transcriber(AsrConfig(model=args.asr_model, device=args.asr_device, context=args.asr_context,
                                       language=args.language, sticky_language=True))  # one session, as memocmt-live
    emotion = load_emotion_model(args.model, None if args.emotion_device == "auto" else args.emotion_device,
                                 args.emotion_threads or None) if args.model else None
    if emotion is not None:
        transcriber.attach_encoder(emotion.bundle.whisper_encoder())
    transcriber.warm_up()
    denoise = make_denoise_stage(args.denoise, parse_targets(args.denoise_for))
    pipeline = Pipeline(FileSource(path, realtime=realtime), Segmenter(make_classifier(vad), vad),
                        transcriber, emotion, PipelineConfig(live=realtime), denoise=denoise)
    return pipeline, transcriber, emotion


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def main() -> None:
    from benchmarks.machine import machine_info
    from benchmarks.worker import peak_rss_mb, rss_mb

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=12, help="utterances to play (default: 12)")
    p.add_argument("--gap-s", type=float, default=1.5, help="silence between utterances (default: 1.5)")
    p.add_argument("--vad", choices=["webrtc", "silero"], default="webrtc", help="VAD (default: webrtc)")
    p.add_argument("--hangover-ms", type=int, default=300, help="VAD hangover (default: 300)")
    p.add_argument("--speculate-ms", type=int, default=120, help="speculative recognition after this silence (default: 120)")
    p.add_argument("--asr-model", help="faster-whisper model (default: offline tiny.en)")
    p.add_argument("--language", default=None,
                   help="spoken language for ASR: auto (detect per utterance) or a code such as en or pl (default: the "
                        "model's: en for English-only models, detected for multilingual ones)")
    p.add_argument("--asr-device", choices=["auto", "cpu", "cuda"], default="auto", help="ASR device (default: auto)")
    p.add_argument("--asr-context", choices=["short", "full"], default="short",
                   help="ASR context: short (from the emotion model's Whisper encoder) or full 30 s (default: short)")
    p.add_argument("--model", help="emotion bundle directory (default: none, ASR only)")
    p.add_argument("--emotion-device", choices=["auto", "cpu", "cuda"], default="auto", help="emotion device (default: auto)")
    p.add_argument("--emotion-threads", type=int, default=0, help="emotion model CPU threads (default 0: the runtime's default)")
    p.add_argument("--denoise", choices=["off", "dfn3"], default="off", help="denoise stage (default: off)")
    p.add_argument("--denoise-for", default="emotion", help="stages that hear the enhanced signal (default: emotion, as memocmt-live)")
    p.add_argument("--repeats", type=int, default=5, help="repeats for the compute timings (default: 5)")
    args = p.parse_args()

    import soundfile as sf

    from memocmt.audio import SAMPLE_RATE
    from memocmt.languages import LanguageError

    speech = [espeak(SENTENCES[i % len(SENTENCES)]) for i in range(min(args.utterances, len(SENTENCES)))]
    gap = np.zeros(int(args.gap_s * SAMPLE_RATE), dtype=np.float32)
    parts = [gap]
    for i in range(args.utterances):
        parts += [speech[i % len(speech)], gap]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "session.wav"
        sf.write(path, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
        rss_before = rss_mb()
        try:
            pipeline, transcriber, emotion = build(args, path, realtime=True)
        except LanguageError as e:
            p.error(str(e))
        rss_loaded = rss_mb()
        t0 = time.perf_counter()
        results = pipeline.run()
        wall_s = time.perf_counter() - t0
    summary = pipeline.session_summary()

    compute = {"utterance_s": float(np.mean([len(s) for s in speech]) / SAMPLE_RATE)}
    compute["asr_ms"] = float(np.median([median_ms(lambda s=s: transcriber.transcribe(s), args.repeats) for s in speech[:3]]))
    if emotion is not None:
        compute["emotion_ms"] = float(np.median([
            median_ms(lambda s=s: emotion.predict(s, "I am very happy to see you today."), args.repeats) for s in speech[:3]
        ]))
    report = {
        "benchmark": "live_latency",
        "machine": machine_info(),
        "config": {"vad": args.vad, "hangover_ms": args.hangover_ms, "speculate_ms": args.speculate_ms,
                   "asr_model": transcriber.model_name, "asr_device": transcriber.device,
                   "compute_type": transcriber.compute_type, "emotion_model": args.model,
                   "asr_context": transcriber.context, "language": args.language or "",
                   "denoise": args.denoise,
                   "denoise_for": args.denoise_for if args.denoise != "off" else None,
                   "asr_fallbacks": transcriber.fallbacks,
                   "source": "file paced in real time", "utterances": args.utterances},
        "recognised": len(results),
        "speculative_hits": sum(r.speculative for r in results),
        "latency_ms": summary.latency_ms,
        "compute_ms": compute,
        "rss_mb": {"start": round(rss_before, 1), "models_loaded": round(rss_loaded, 1), "peak": round(peak_rss_mb(), 1)},
        "dropped_audio_s": summary.dropped_audio_s,
        "overflows": summary.overflows,
        "wall_s": round(wall_s, 2),
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
    main()
