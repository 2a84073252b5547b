"""`python -m benchmarks`: latency vs accuracy for every variant, as JSON, markdown and PNG.

    python -m benchmarks --quick                       # minutes; CI smoke check, never a timed assertion
    python -m benchmarks --full                        # the committed report (benchmarks/results/latest/)
    python -m benchmarks --full --compare benchmarks/results/latest/results.json --out runs/bench-new
    python -m benchmarks --compare OLD.json --against NEW.json    # compare two results, measure nothing

Every variant sees the same utterances; variants are interleaved round-robin per repetition
after warm-up; percentiles are reported with the machine, its load average and the library
versions. PyTorch eager on the edge preset is the reference point for every speed-up ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.machine import describe, load_average, machine_info
from benchmarks.variants import REFERENCE, VARIANTS, Sources

logger = logging.getLogger("memocmt")

SCHEMA = "memocmt-bench/1"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_RAVDESS = REPO.parent / "shared" / "data" / "ravdess-a01-a20"
DEFAULT_SYNTHETIC = REPO / "runs" / "default-model" / "data" / "synthetic"  # written by the training recipe
PARTS = ("vad", "asr", "latency", "reference", "scaling", "throughput", "accuracy", "floors", "load")


@dataclass
class Profile:
    """How much to measure."""

    name: str
    variants: list[str]
    stage_utterances: int  # utterances for per-stage latency
    repeats: int
    lengths_s: list[float]
    scaling_repeats: int
    batch_sizes: list[int]
    throughput_utterances: int
    throughput_repeats: int
    accuracy_limit: int | None  # utterances per evaluation set (None: all)
    load_repeats: int
    vad_stream_s: float
    vad_repeats: int
    reference_repeats: int = 10  # runs of the 3 s / 12-word reference utterance per variant
    skip: list[str] = field(default_factory=list)


ALL_VARIANTS = list(VARIANTS)
PROFILES = {
    "quick": Profile("quick", ["edge-torch", "edge-ort-fp32", "edge-ort-int8", "edge-ort-fp32-cuda", "edge-ort-fp16-cuda"],
                     stage_utterances=4, repeats=2, lengths_s=[1, 2, 5], scaling_repeats=1, batch_sizes=[1, 8],
                     throughput_utterances=8, throughput_repeats=1, accuracy_limit=16, load_repeats=1,
                     vad_stream_s=20, vad_repeats=2, skip=["floors"]),
    "full": Profile("full", ALL_VARIANTS, stage_utterances=24, repeats=5, lengths_s=[1, 2, 5, 10, 20], scaling_repeats=3,
                    batch_sizes=[1, 8], throughput_utterances=32, throughput_repeats=2, accuracy_limit=None,
                    load_repeats=3, vad_stream_s=120, vad_repeats=5, reference_repeats=40),
}


# ---------------------------------------------------------------------- measuring


def _clips(manifest, n: int):
    from benchmarks.accuracy import subsample
    from benchmarks.latency import Clip
    from memocmt.audio import load_audio

    return [Clip(load_audio(u.audio), u.text, u.id) for u in subsample(manifest, n)]


def _vad_stream(clips, seconds: float):
    import numpy as np

    from benchmarks.latency import SAMPLE_RATE, join_clips

    stream = join_clips(clips, seconds).audio
    rng = np.random.default_rng(0)
    gaps = np.repeat(rng.uniform(0, 1, size=int(seconds)) < 0.3, SAMPLE_RATE)[: stream.size]
    return np.where(gaps, 0.0, stream).astype(np.float32) + rng.normal(0, 0.003, stream.size).astype(np.float32)


def run_benchmark(profile: Profile, sources: Sources, eval_sets: dict, *, accuracy_sets: dict | None = None,
                  ravdess: Path | None = None, embedding_cache: Path | None = None) -> dict:
    """Measure everything the profile asks for. `eval_sets`: name -> test Manifest (the first also feeds latency)."""
    from benchmarks import accuracy, latency
    from benchmarks.variants import ModelCache, open_runner, unavailable_reason, warm_up_runner

    started = time.perf_counter()
    skip = set(profile.skip)
    result: dict = {"schema": SCHEMA, "mode": profile.name,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine_info(), "profile": asdict(profile), "sources": sources.to_dict(),
                    "reference": REFERENCE, "split": accuracy.SPLIT_NOTE, "variants": {}}
    if sources.checkpoint:
        from memocmt.runtime import sha256_file

        result["sources"]["checkpoint_sha256"] = sha256_file(sources.checkpoint)
    models, runners = ModelCache(sources), {}
    for name in profile.variants:
        spec = VARIANTS[name]
        entry = result["variants"][name] = {**spec.to_dict(), "measured": False}
        reason = unavailable_reason(spec, sources)
        if reason:
            entry["note"] = reason
            continue
        logger.info("Loading %s", name)
        runner, disk = open_runner(spec, sources, models)
        warm_up_runner(runner)
        runners[name] = runner
        entry.update(measured=True, disk_mb=disk, bundle=str(getattr(getattr(runner, "bundle", None), "path", "")) or None)
        if not spec.trained:
            entry["note"] = "random weights (default transformers configs): speed only, accuracy n/a"

    first_set = next(iter(eval_sets.values()))
    clips = _clips(first_set, profile.stage_utterances)
    result["latency_data"] = {"set": next(iter(eval_sets)), "utterances": [c.id for c in clips]}
    transcriber = None
    if "asr" not in skip:
        from memocmt.live.asr import AsrConfig, Transcriber

        transcriber = Transcriber(AsrConfig(cpu_threads=sources.threads))
        transcriber.warm_up()
        result["asr_model"] = {"model": transcriber.model_name, "device": transcriber.device,
                               "compute_type": transcriber.compute_type}
    if "vad" not in skip:
        logger.info("VAD")
        result["vad"] = latency.measure_vad(_vad_stream(clips, profile.vad_stream_s), ["webrtc", "silero"], profile.vad_repeats)
    if "latency" not in skip:
        logger.info("Per-stage latency: %d utterances x %d repeats", len(clips), profile.repeats)
        vad = None if "vad" in skip else latency.VadTimer("webrtc")
        result["latency"] = latency.measure_stages(runners, clips, profile.repeats, transcriber, vad)
        ref = result["latency"]["variants"].get(REFERENCE)
        if ref:
            result["speedup_vs_reference"] = {
                n: {k: ref[k]["p50"] / v[k]["p50"] for k in ("model", "audio_encoder", "text_encoder", "end_to_end")}
                for n, v in result["latency"]["variants"].items()}
    if "reference" not in skip:
        logger.info("Reference utterance: %d repeats", profile.reference_repeats)
        result["reference"] = latency.measure_reference(runners, clips, profile.reference_repeats)
    if "scaling" not in skip:
        logger.info("Scaling with utterance length %s", profile.lengths_s)
        result["scaling"] = latency.measure_scaling(runners, clips, profile.lengths_s, profile.scaling_repeats, transcriber)
    if "throughput" not in skip:
        logger.info("Batch throughput %s", profile.batch_sizes)
        tp_clips = _clips(first_set, profile.throughput_utterances)
        result["throughput"] = latency.measure_throughput(runners, tp_clips, profile.batch_sizes, profile.throughput_repeats)
    if "accuracy" not in skip:
        trained = {n: r for n, r in runners.items() if VARIANTS[n].trained}
        sets = {k: accuracy.subsample(m, profile.accuracy_limit) for k, m in (accuracy_sets or eval_sets).items()}
        logger.info("Accuracy of %s on %s", list(trained), {k: len(m) for k, m in sets.items()})
        result["accuracy"] = accuracy.evaluate_variants(trained, sets, REFERENCE)
        result["accuracy_sets"] = {k: len(m) for k, m in sets.items()}
    if "floors" not in skip and ravdess is not None:
        logger.info("Floors")
        result["floors"] = accuracy.floors(ravdess, embedding_cache, sources.cache_dir)
    if "load" not in skip:
        logger.info("Load time and peak RSS, one process per variant")
        jobs = {}
        for name, runner in runners.items():
            spec = VARIANTS[name]
            if spec.backend == "torch":
                jobs[name] = {"kind": "torch", "variant": name, "threads": sources.threads, "cache_dir": str(sources.cache_dir),
                              "checkpoint": str(sources.checkpoint) if sources.checkpoint else None}
            else:
                jobs[name] = {"kind": "ort", "variant": name, "path": str(runner.bundle.path), "device": spec.device,
                              "threads": sources.threads}
        if transcriber is not None:
            jobs["asr"] = {"kind": "asr", "threads": sources.threads}
        del models, runners  # free the in-process models before the workers run
        result["load"] = latency.measure_load(jobs, profile.load_repeats)
    result["machine"]["load_average_end"] = load_average()
    result["wall_s"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------- markdown


def _f(x, fmt="{:.1f}", missing="–"):
    return missing if x is None else fmt.format(x)


def _pct(x):
    return _f(None if x is None else 100 * x, "{:.1f}%")


def markdown(result: dict) -> str:
    m = result["machine"]
    lat = (result.get("latency") or {}).get("variants", {})
    shared = (result.get("latency") or {}).get("shared", {})
    acc, load, tp = result.get("accuracy") or {}, result.get("load") or {}, (result.get("throughput") or {}).get("variants", {})
    speed = result.get("speedup_vs_reference") or {}
    src = result.get("sources", {})
    out = [
        f"# MemoCMT benchmark ({result['mode']})", "",
        f"- Created {result['created']}, {result.get('wall_s', 0) / 60:.1f} min.",
        f"- Machine: {describe(m)}.",
        f"- Load average (1/5/15 min) at start {m.get('load_average_start')}, at end {m.get('load_average_end')}"
        " (other jobs shared this machine when these exceed the core count: figures are noisier then).",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + f"; ORT providers: {', '.join(m.get('ort_providers', []))}.",
        f"- Edge checkpoint: `{Path(src.get('checkpoint') or '-').name}` (SHA-256 {str(src.get('checkpoint_sha256', '-'))[:12]}), "
        f"{src.get('threads')} CPU threads for PyTorch and ONNX Runtime.",
        f"- Data: {result.get('split')}. Latency on {result.get('latency', {}).get('utterances', 0)} utterances of "
        f"`{result.get('latency_data', {}).get('set')}` test (mean {result.get('latency', {}).get('mean_utterance_s', 0):.2f} s) "
        f"x {result.get('latency', {}).get('repeats', 0)} repeats, variants interleaved round-robin after warm-up.",
        f"- End to end = VAD (webrtc) + ASR ({(result.get('asr_model') or {}).get('model', 'off')}) + emotion model, run one after"
        " the other (the live pipeline overlaps some of it, so this is an upper bound). RTF = time / audio length.", "",
        "## Headline", "",
        "| variant | model p50 ms | speed-up vs edge-torch | end-to-end p50 / p95 / p99 ms | RTF p50 | RAVDESS UA / WA | synthetic UA / WA | agrees with edge-torch | disk MB | ready ms | peak RSS MB | utt/s bs1 / bs8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in result["variants"].items():
        if not v.get("measured"):
            out.append(f"| {name} | {v.get('note', 'not measured')} |" + " |" * 11)
            continue
        s = lat.get(name, {})
        e2e = s.get("end_to_end", {})
        a = acc.get(name, {})
        r, syn = a.get("ravdess", {}), a.get("synthetic", {})
        ua = lambda d: "n/a (untrained)" if not v["trained"] else f"{_pct(d.get('ua'))} / {_pct(d.get('wa'))}"  # noqa: E731
        agree = r.get("agreement_with_reference")
        bs = tp.get(name, {})
        out.append(
            f"| {name} | {_f(s.get('model', {}).get('p50'))} | {_f(speed.get(name, {}).get('model'), '{:.2f}x')} | "
            f"{_f(e2e.get('p50'), '{:.0f}')} / {_f(e2e.get('p95'), '{:.0f}')} / {_f(e2e.get('p99'), '{:.0f}')} | "
            f"{_f(s.get('rtf', {}).get('p50'), '{:.3f}')} | {ua(r)} | {ua(syn)} | {_pct(agree) if v['trained'] else 'n/a'} | "
            f"{_f(v.get('disk_mb'), '{:.0f}')} | {_f(load.get(name, {}).get('ready_ms'), '{:.0f}')} | "
            f"{_f(load.get(name, {}).get('peak_rss_mb'), '{:.0f}')} | "
            f"{' / '.join(_f(bs.get(k, {}).get('utt_per_s')) for k in sorted(bs, key=int))} |")
    adapted = {name: a for name, a in acc.items() if any(k.startswith("ravdess_after_") for k in a)}
    if adapted:
        ks = sorted({int(k.rsplit("_", 1)[1]) for a in adapted.values() for k in a if k.startswith("ravdess_after_")})
        out += ["", "Speaker-normalised variants on RAVDESS when each speaker's statistics come from only K of its "
                    "utterances (the one classified and K-1 others) and the model's prior, as live after K utterances:", "",
                "| variant | " + " | ".join(f"UA, K = {k}" for k in ks) + " | UA, all utterances |",
                "|---|" + "---:|" * (len(ks) + 1)]
        for name, a in adapted.items():
            out.append(f"| {name} | " + " | ".join(_pct(a.get(f"ravdess_after_{k}", {}).get("ua")) for k in ks)
                       + f" | {_pct(a.get('ravdess', {}).get('ua'))} |")
    floors = result.get("floors") or {}
    if floors:
        out += ["", "Floors on the same RAVDESS test actors (logistic regression, benchmarks/baselines.py):", ""]
        if "error" in floors:
            out.append(f"- not measured: {floors['error']}")
        for name, f in floors.items():
            if isinstance(f, dict) and "ua" in f:
                out.append(f"- {name} ({f['dims']}-d): UA {_pct(f['ua'])}, WA {_pct(f['wa'])}")
    if lat:
        out += ["", "## Per-stage latency (ms, p50 / p95 / p99)", "",
                "| variant | features | audio encoder | text encoder | fusion | model total | end to end |", "|---|---:|---:|---:|---:|---:|---:|"]
        trio = lambda d: f"{_f(d.get('p50'))} / {_f(d.get('p95'))} / {_f(d.get('p99'))}"  # noqa: E731
        for name, s in lat.items():
            out.append(f"| {name} | " + " | ".join(trio(s.get(k, {})) for k in
                                                  ("features", "audio_encoder", "text_encoder", "fusion", "model", "end_to_end")) + " |")
        out += ["", f"Shared stages per utterance: VAD (webrtc) {trio(shared.get('vad', {}))} ms; ASR {trio(shared.get('asr', {}))} ms."]
    if result.get("vad"):
        out += ["", "## VAD (ms of compute per second of audio)", "",
                "The whole segmenter as the live pipeline runs it (30 ms blocks, framing, pre-roll, hangover), "
                "over a stream of the test utterances with gaps and light noise.", "", "| backend | p50 | p95 | segments found | stream s |", "|---|---:|---:|---:|---:|"]
        for name, v in result["vad"].items():
            out.append(f"| {name} | {v['ms_per_audio_s']['p50']:.3f} | {v['ms_per_audio_s']['p95']:.3f} | {v['segments']} | {v['stream_s']:.0f} |")
    ref = result.get("reference")
    if ref:
        out += ["", f"## Reference utterance ({ref['seconds']:g} s of speech, {ref['words']} words, batch 1; ms p50 "
                f"over {ref['repeats']} interleaved runs)", "", f"Transcript: \"{ref['text']}\".", "",
                "| variant | features | audio encoder | text encoder | fusion | encoders + fusion | model total |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for name, v in ref["variants"].items():
            out.append(f"| {name} | " + " | ".join(_f(v.get(k)) for k in
                                                  ("features", "audio_encoder", "text_encoder", "fusion", "encoders_and_fusion", "model")) + " |")
    sc = result.get("scaling")
    if sc:
        names = list(sc["variants"])
        out += ["", "## Latency vs utterance length (ms, p50, batch 1)", "",
                "Emotion model (features + encoders + fusion) on clips of joined test utterances; ASR for comparison "
                "(Whisper pads every input to a 30 s window, so its cost barely grows with length).", "",
                "| length s | " + " | ".join(names) + (" | ASR |" if sc.get("asr_ms_p50") else " |"),
                "|---:|" + "---:|" * (len(names) + bool(sc.get("asr_ms_p50")))]
        for i, s in enumerate(sc["lengths_s"]):
            row = [f"{sc['variants'][n]['model_ms_p50'][i]:.0f}" for n in names]
            if sc.get("asr_ms_p50"):
                row.append(f"{sc['asr_ms_p50'][i]:.0f}")
            out.append(f"| {s:g} | " + " | ".join(row) + " |")
    if tp:
        out += ["", f"## Batch throughput ({result['throughput']['utterances']} utterances, "
                f"{result['throughput']['audio_s']:.0f} s of audio; utterances/s, median)", ""]
        sizes = sorted(next(iter(tp.values())), key=int)
        out += ["| variant | " + " | ".join(f"batch {s}" for s in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for name, by in tp.items():
            out.append(f"| {name} | " + " | ".join(f"{by[s]['utt_per_s']:.1f}" for s in sizes) + " |")
    if load:
        out += ["", "## Load (fresh process per variant, median)", "",
                "| variant | imports ms | load ms | warm-up ms | ready ms | RSS after load MB | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, v in load.items():
            if "error" in v:
                out.append(f"| {name} | {v['error']} | | | | | |")
            else:
                out.append(f"| {name} | {v['import_ms']:.0f} | {v['load_ms']:.0f} | {v['warmup_ms']:.0f} | {v['ready_ms']:.0f} | "
                           f"{v['rss_loaded_mb']:.0f} | {v['peak_rss_mb']:.0f} |")
    plots = [p for p in ("latency_vs_accuracy.png", "latency_vs_length.png", "throughput_vs_batch.png")]
    out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"


def write_outputs(result: dict, out: Path) -> list[Path]:
    from benchmarks.plots import write_plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "README.md").write_text(markdown(result))
    return [out / "results.json", out / "README.md", *write_plots(result, out)]


# ---------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few utterances, edge variants, no floors (default)")
    mode.add_argument("--full", action="store_true", help="everything, as committed under benchmarks/results/latest/")
    p.add_argument("--out", type=Path, help="output folder (default: benchmarks/results/latest for --full, runs/benchmarks/quick otherwise)")
    p.add_argument("--compare", type=Path, metavar="OLD.json", help="print what got faster or slower than this earlier result")
    p.add_argument("--against", type=Path, metavar="NEW.json", help="with --compare: compare this result instead of measuring")
    p.add_argument("--threshold", type=float, default=None, help="relative change treated as noise in --compare (default 0.10)")
    p.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, help="model variants to measure (default: the mode's)")
    p.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="parts to leave out")
    p.add_argument("--checkpoint", type=Path, help="trained edge checkpoint (default: the shipped model)")
    p.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS, help="RAVDESS root with Actor_XX folders")
    p.add_argument("--synthetic", type=Path, help="synthetic corpus folder (default: the training recipe's, else generated in the cache)")
    p.add_argument("--cache-dir", type=Path, help="bundles, paper stand-ins, floors (default: $MEMOCMT_HOME/bench)")
    p.add_argument("--embedding-cache", type=Path, default=REPO / ".cache" / "embeddings", help="training's embedding cache, reused by the floors")
    p.add_argument("--threads", type=int, help="CPU threads for every backend (default: physical cores, at most 4)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def _print_compare(old_path: Path, new: dict, threshold: float | None) -> None:
    from benchmarks.compare import DEFAULT_THRESHOLD, compare, format_changes

    old = json.loads(old_path.read_text())
    changes = compare(old, new, DEFAULT_THRESHOLD if threshold is None else threshold)
    print(format_changes(changes, old.get("machine"), new.get("machine")))


def cli(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per transcription otherwise
    if args.against:
        if not args.compare:
            parser.error("--against needs --compare OLD.json")
        _print_compare(args.compare, json.loads(args.against.read_text()), args.threshold)
        return 0
    if args.compare and not args.compare.is_file():
        parser.error(f"--compare {args.compare} does not exist")

    import os

    from memocmt.providers import default_threads
    from memocmt.runtime import memocmt_home, shipped_checkpoint

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    profile = PROFILES["full" if args.full else "quick"]
    profile = Profile(**{**asdict(profile), "variants": args.variants or profile.variants,
                                    "skip": sorted(set(profile.skip) | set(args.skip))})
    checkpoint = args.checkpoint or shipped_checkpoint()
    if checkpoint is None and any(VARIANTS[v].preset == "edge" for v in profile.variants):
        parser.error("no trained checkpoint ships with this install; pass --checkpoint PATH")
    if checkpoint is not None and not Path(checkpoint).is_file():
        parser.error(f"--checkpoint {checkpoint} does not exist")
    sources = Sources(Path(checkpoint) if checkpoint else None, args.cache_dir or memocmt_home() / "bench",
                      args.threads or default_threads())

    from benchmarks.accuracy import ravdess_manifest, ravdess_test, synthetic_test

    sets = {}
    ravdess = args.ravdess if args.ravdess and args.ravdess.is_dir() else None
    if ravdess:
        sets["ravdess"] = ravdess_test(ravdess)
        sources.calibration = ravdess_manifest(ravdess, sources.cache_dir)
    else:
        logger.warning("RAVDESS not found at %s: real-speech accuracy and floors are not measured", args.ravdess)
    synthetic = args.synthetic or (DEFAULT_SYNTHETIC if (DEFAULT_SYNTHETIC / "manifest.jsonl").is_file() else sources.cache_dir / "synthetic")
    sets["synthetic"] = synthetic_test(synthetic)
    result = run_benchmark(profile, sources, sets, ravdess=ravdess, embedding_cache=args.embedding_cache)
    out = args.out or (REPO / "benchmarks" / "results" / "latest" if args.full else REPO / "runs" / "benchmarks" / "quick")
    for path in write_outputs(result, out):
        print(f"wrote {path}")
    if args.compare:
        _print_compare(args.compare, result, args.threshold)
    return 0
