"""What does decoding several utterances in one CTranslate2 call save on this CPU?

memocmt-serve's Whisper worker takes up to `--asr-max-batch` waiting utterances of different
sessions and transcribes them together (memocmt.live.asr.Transcriber.transcribe_batch): one
encoder pass with each utterance padded with silence to the longest, then one decoding of all.
This compares N utterances done that way against the same N one at a time, as the server did
before, with the shipped emotion bundle's Whisper base encoder and the Whisper base decoder (short
context, English), as `memocmt-serve --language en` runs:

  * decode: CTranslate2's generate (and the per-utterance checks) only, from encoder states
    computed beforehand: each utterance's own-length pass one at a time, the padded batch's at once;
  * end to end: transcribe_batch(N utterances) against N x transcribe (encoder passes, checks,
    retries of runaway or looping outputs, any 30 s fallback).

Two sets of utterances: espeak-ng sentences of different lengths (1.1-5.0 s; padding to the
longest costs encoder time), and with --ravdess, RAVDESS clips of 8 actors (all 2.39 s in this
copy, what benchmarks/serve_load.py streams). The variants alternate within each repeat; medians
are reported, with each path's transcripts and the machine (CPU flags included).

    python benchmarks/studies/asr_batch.py --sizes 2,4,8 --repeats 3 --ravdess ../shared/data/ravdess-a01-a20 \
        --out benchmarks/results/serve/asr_batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SENTENCES = [  # different lengths, so a batch pads the shorter ones
    "Good morning, I am very happy to see you today.",
    "Why did you do that?",
    "Tomorrow we will walk along the river together, if the weather stays this nice.",
    "Please leave me alone.",
    "I really cannot believe how wonderful this evening was.",
    "Not now.",
    "The meeting has been moved to Thursday afternoon.",
    "Kids are talking by the door.",
]


def batch_encoder(bundle):
    """The bundle's Whisper encoder as memocmt-serve attaches it: one utterance, or several of one length at once."""
    from memocmt.runtime import to_host

    def encode(audio: np.ndarray) -> np.ndarray:
        return bundle.final_audio_states(audio)

    def batch(audios: list[np.ndarray]) -> list[np.ndarray]:
        encoding = bundle.encode_audio_batch(audios)
        states = to_host(encoding.states)
        return [states[i, -1, : int(n)] for i, n in enumerate(encoding.lengths)]

    encode.batch = batch
    return encode


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def measure(transcriber, audios: list[np.ndarray], repeats: int) -> dict:
    pad = int(transcriber.config.context_pad_s * 16000)
    alone = [transcriber._encode_short([a], a.size + pad) for a in audios]
    together = transcriber._encode_short(audios, max(a.size for a in audios) + pad)
    times: dict[str, list[float]] = {"decode_one_at_a_time": [], "decode_batched": [],
                                     "end_to_end_one_at_a_time": [], "end_to_end_batched": []}
    for r in range(repeats):
        order = ("one", "batched") if r % 2 == 0 else ("batched", "one")
        for variant in order:
            if variant == "one":
                ms, one = timed(lambda: [transcriber._decode_short(s, [a], 0.0, 0.0, "en")[0]
                                         for s, a in zip(alone, audios)])
                times["decode_one_at_a_time"].append(ms)
                ms, single = timed(lambda: [transcriber.transcribe(a) for a in audios])
                times["end_to_end_one_at_a_time"].append(ms)
            else:
                ms, batched = timed(lambda: transcriber._decode_short(together, audios, 0.0, 0.0, "en"))
                times["decode_batched"].append(ms)
                ms, many = timed(lambda: transcriber.transcribe_batch(audios))
                times["end_to_end_batched"].append(ms)
    med = {k: round(float(np.median(v)), 1) for k, v in times.items()}
    return {
        "utterances": len(audios),
        "durations_s": [round(a.size / 16000, 2) for a in audios],
        "median_ms": med,
        "decode_ratio_one_at_a_time_over_batched": round(med["decode_one_at_a_time"] / med["decode_batched"], 2),
        "end_to_end_ratio_one_at_a_time_over_batched": round(med["end_to_end_one_at_a_time"] / med["end_to_end_batched"], 2),
        "decode_checks_failed": {"one_at_a_time": sum(t is None for t in one), "batched": sum(t is None for t in batched)},
        "texts_one_at_a_time": [t.text for t in single],
        "texts_batched": [t.text for t in many],
        "contexts_one_at_a_time": [t.context for t in single],  # "full": fell back to the 30 s window
        "contexts_batched": [t.context for t in many],
        "same_texts": sum(a.text == b.text for a, b in zip(single, many)),
    }


def ravdess_clips(folder: Path) -> list[np.ndarray]:
    """One clip per actor 1-8 (neutral, happy, sad or angry; either sentence)."""
    from memocmt.audio import load_audio

    clips = []
    for actor in range(1, 9):
        files = sorted((folder / f"Actor_{actor:02d}").glob("03-01-0[1345]-*.flac"))
        if not files:
            sys.exit(f"No RAVDESS speech in {folder / f'Actor_{actor:02d}'}")
        clips.append(load_audio(files[(3 * actor) % len(files)]))
    return clips


def main() -> None:
    from benchmarks.machine import machine_info
    from memocmt.live.asr import AsrConfig, Transcriber, asr_model_for
    from memocmt.live.pipeline import load_emotion_model
    from live_latency import espeak

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="4", help="batch sizes to compare, comma-separated, at most 8 (default: 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each variant (default: 3)")
    p.add_argument("--ravdess", type=Path, help="RAVDESS folder (Actor_*/...flac): also measure on its clips")
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    args = p.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    if not all(1 <= n <= len(SENTENCES) for n in sizes):
        sys.exit(f"--sizes: each between 1 and {len(SENTENCES)}")

    machine = machine_info()
    print(f"CPU: {machine['cpu']}, {machine['logical_cores']} logical cores, flags {' '.join(machine['cpu_flags'])}; "
          f"load average {machine['load_average_start']}", file=sys.stderr, flush=True)
    emotion = load_emotion_model(None)
    transcriber = Transcriber(AsrConfig(model=asr_model_for(emotion.bundle) or "whisper-base", language="en"))
    if not transcriber.attach_encoder(batch_encoder(emotion.bundle)):
        sys.exit("The emotion bundle's audio encoder is not this Whisper model's; nothing to compare.")
    transcriber.warm_up()
    sets = {"espeak_mixed_lengths": [espeak(s) for s in SENTENCES]}
    if args.ravdess:
        sets["ravdess_2.39s"] = ravdess_clips(args.ravdess)
    report = {"benchmark": "asr_batch", "machine": machine,
              "config": {"asr_model": transcriber.model_name, "compute_type": transcriber.compute_type,
                         "cpu_threads": transcriber.config.cpu_threads or "default (one per core, at most 4)",
                         "context": transcriber.context, "pad_s": transcriber.config.context_pad_s,
                         "emotion_model": emotion.name, "repeats": args.repeats},
              "sentences": SENTENCES, "sets": {}}
    for name, audios in sets.items():
        report["sets"][name] = rows = []
        for n in sizes:
            result = measure(transcriber, audios[:n], args.repeats)
            rows.append(result)
            med = result["median_ms"]
            print(f"{name} N={n}: decode {med['decode_one_at_a_time']:.0f} ms one at a time, {med['decode_batched']:.0f} ms "
                  f"batched (ratio {result['decode_ratio_one_at_a_time_over_batched']}); end to end "
                  f"{med['end_to_end_one_at_a_time']:.0f} / {med['end_to_end_batched']:.0f} ms (ratio "
                  f"{result['end_to_end_ratio_one_at_a_time_over_batched']}); same texts {result['same_texts']}/{n}",
                  file=sys.stderr, flush=True)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    here = Path(__file__).resolve()
    sys.path[:0] = [str(here.parents[2]), str(here.parents[1])]  # run from a checkout; live_latency's espeak
    main()
