"""Accuracy through the live path: what a person sees, against the offline figure for the same model.

    python benchmarks/live_accuracy.py                                   # RAVDESS test actors 17-20
    python benchmarks/live_accuracy.py --folder my_clips --speaker-pattern '^(\\w+)_'   # any folder corpus
    python benchmarks/live_accuracy.py --model BUNDLE --speakers one --out benchmarks/results/live_accuracy

One session per speaker: the speaker's clips in a seeded random order, joined with `--gap-s`
seconds of silence, written as a 16 kHz WAV and streamed through `memocmt-live --input SESSION.wav
--fast --jsonl ...` in a subprocess, exactly as a user runs it (capture from file, VAD, Whisper,
emotion model, speaker adaptation and voice tracker). Each JSONL result is matched to the clip it
overlaps most in stream time; a clip no result overlaps is "missed", a result that overlaps no
clip is "spurious", a clip with several results keeps the one that overlaps it most.

Reported, live beside offline (`memocmt.evaluate.evaluate_speaker_utterances` on the same clips
with the same bundle): UA and ECE by the number of the speaker's utterances heard so far (the
clip's position in its session) and over the whole session; the voice tracker's figures (voices
per one-speaker session, share of utterances in the session's main voice); missed and spurious
clips. Writes <out>/<name>.json, .md and .png (UA against utterances heard).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memocmt.audio import SAMPLE_RATE, load_audio  # noqa: E402
from memocmt.manifest import Manifest  # noqa: E402

# Positions in a session (utterances of the speaker heard so far, this one included) that are
# scored together, and the offline K each bin is set beside.
POSITION_BINS = ((1, 1), (2, 3), (4, 10), (11, 20), (21, 10_000))
OFFLINE_K = (1, 3, 10, 20)
DEFAULT_GAP_S = 1.0


@dataclass
class Clip:
    id: str
    speaker: str
    label: str
    start_s: float
    end_s: float


def build_session(items: list, path: Path, gap_s: float, rng: np.random.Generator,
                  gap_noise_dbfs: float | None = None) -> list[Clip]:
    """Write one speaker's clips, in a random order with `gap_s` of silence around each, to `path`
    (16-bit PCM WAV); returns where each clip lies in the session. The silence is digital zeros, or
    with `gap_noise_dbfs` a quiet room's white noise at that RMS level (seeded)."""
    import soundfile as sf

    n_gap = int(round(gap_s * SAMPLE_RATE))
    noise = np.random.default_rng(12345)

    def silence() -> np.ndarray:
        if gap_noise_dbfs is None:
            return np.zeros(n_gap, dtype=np.float32)
        return (10 ** (gap_noise_dbfs / 20) * noise.standard_normal(n_gap)).astype(np.float32)

    gap = silence()
    pieces, clips, cursor = [gap], [], len(gap)
    for i in rng.permutation(len(items)):
        u = items[int(i)]
        audio = load_audio(u.audio)
        clips.append(Clip(u.id or str(u.audio), u.speaker, u.label, cursor / SAMPLE_RATE,
                          (cursor + len(audio)) / SAMPLE_RATE))
        gap = silence()
        pieces += [audio, gap]
        cursor += len(audio) + len(gap)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(np.concatenate(pieces), -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return clips


def run_live(session: Path, jsonl: Path, live_args: list[str]) -> float:
    """`memocmt-live --input SESSION --fast --jsonl OUT`; returns its wall time in seconds."""
    if jsonl.exists():
        jsonl.unlink()
    cmd = [sys.executable, "-m", "memocmt.live.cli", "--input", str(session), "--fast", "--plain",
           "--jsonl", str(jsonl), *live_args]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise RuntimeError(f"memocmt-live failed on {session} ({done.returncode}): {done.stderr.strip()[-500:]}")
    return time.perf_counter() - started


def read_jsonl(path: Path) -> dict:
    """A session's `memocmt-live --jsonl` lines: {"results": utterance lines, "revisions": hindsight lines}."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {"results": [r for r in lines if r.get("type", "utterance") == "utterance"],
            "revisions": [r for r in lines if r.get("type") == "revision"]}


def match(clips: list[Clip], results: list[dict]) -> tuple[dict[int, dict], int]:
    """Clip index -> the result that overlaps it most, and the number of results overlapping no clip."""
    best: dict[int, tuple[float, dict]] = {}
    spurious = 0
    for r in results:
        overlaps = [min(c.end_s, r["end_s"]) - max(c.start_s, r["start_s"]) for c in clips]
        i = int(np.argmax(overlaps))
        if overlaps[i] <= 0:
            spurious += 1
            continue
        if i not in best or overlaps[i] > best[i][0]:
            best[i] = (overlaps[i], r)
    return {i: r for i, (_, r) in best.items()}, spurious


def _scores(labels: list[str], truth: list[str], probs: list[np.ndarray]) -> dict:
    from memocmt.calibration import calibration_report
    from memocmt.metrics import unweighted_accuracy

    if not truth:
        return {"n": 0}
    y = np.array([labels.index(t) for t in truth])
    p = np.stack(probs)
    cal = calibration_report(p, y)
    return {"n": len(truth), "ua": unweighted_accuracy(y, p.argmax(1), len(labels)), "wa": float((p.argmax(1) == y).mean()),
            "ece": cal.ece, "ece_calibrated": cal.ece_calibrated, "ece_p": cal.ece_p, "nll": cal.nll, "brier": cal.brier}


def score_live(labels: list[str], sessions: list[dict]) -> dict:
    """Live UA/ECE overall and by position in the session, the tracker's figures, missed/spurious."""
    rows = []  # (position, true label, probabilities as shown, probabilities after hindsight)
    voices, main_share, missed, spurious, splits, revised = [], [], 0, 0, 0, 0
    for s in sessions:
        matched, extra = match(s["clips"], s["results"])
        spurious += extra
        missed += len(s["clips"]) - len(matched)
        later = {r["index"]: r for r in s.get("revisions", [])}  # the last revision of each utterance
        heard = 0
        for i, clip in enumerate(s["clips"]):
            if i not in matched:
                continue
            heard += 1
            r = matched[i]
            final = later.get(r["index"], r)
            revised += final is not r and final["label"] != r["label"]
            rows.append((heard, clip.label, np.array([r["probabilities"][c] for c in labels]),
                         np.array([final["probabilities"][c] for c in labels])))
        named = [r.get("speaker") for r in s["results"] if r.get("speaker") is not None]
        if named:
            counts = Counter(named)
            voices.append(len(counts))
            main_share.append(counts.most_common(1)[0][1] / len(named))
        splits += sum(1 for r in s["results"] if r.get("forced_split"))
    out = {"all": _scores(labels, [row[1] for row in rows], [row[2] for row in rows]),
           "hindsight": _scores(labels, [row[1] for row in rows], [row[3] for row in rows])}
    out["hindsight"]["changed"] = int(revised)
    for lo, hi in POSITION_BINS:
        picked = [(t, p) for pos, t, p, _ in rows if lo <= pos <= hi]
        out[_bin_name(lo, hi)] = _scores(labels, [t for t, _ in picked], [p for _, p in picked])
    clips = sum(len(s["clips"]) for s in sessions)
    out["clips"], out["missed"], out["spurious"], out["forced_splits"] = clips, missed, spurious, splits
    if voices:
        out["tracker"] = {"voices_per_session": voices, "main_voice_share": [round(v, 4) for v in main_share],
                          "main_voice_share_mean": float(np.mean(main_share))}
    return out


def _bin_name(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else (f"{lo}+" if hi >= 10_000 else f"{lo}-{hi}")


def score_offline(predictor, manifest: Manifest) -> dict:
    """Offline UA/ECE of the same clips: K of the speaker's utterances with the prior, and all of them."""
    from memocmt.evaluate import evaluate_speaker_utterances

    ks = (0, *OFFLINE_K) if getattr(predictor, "speaker_norm", "") else (0,)
    results = evaluate_speaker_utterances(predictor, manifest, ks, batch_size=16, progress=False)
    out = {}
    for k, result in results.items():
        rep = result.report
        cal = result.calibration
        out["all" if k == 0 else str(k)] = {"n": rep.n, "ua": rep.ua, "wa": rep.wa, "ece": cal.ece, "nll": cal.nll,
                                            "brier": cal.brier, "ece_calibrated": cal.ece_calibrated,
                                            "ece_p": cal.ece_p}
    return out


def to_markdown(result: dict) -> str:
    from benchmarks.machine import describe

    live, offline = result["live"], result["offline"]
    lines = [f"# Live-path accuracy: {result['model']}", "",
             f"{result['data']}: one session per speaker ({result['sessions']} sessions, {live['clips']} clips, "
             f"{result['gap_s']} s of " + (f"{result['gap_noise_dbfs']} dBFS noise" if result.get('gap_noise_dbfs') is not None
                                       else "digital silence") + f" between clips), streamed through `memocmt-live --input SESSION --fast` "
             f"with `{' '.join(result['live_args']) or '(default options)'}`. Machine: {describe(result['machine'])}; "
             f"{result['seconds']} s.", "",
             "| utterances of the speaker heard | live UA | live ECE | n | offline K | offline UA | offline ECE |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    pairs = [(_bin_name(lo, hi), str(k)) for (lo, hi), k in zip(POSITION_BINS, (*OFFLINE_K, "all"))]
    for (name, k), _ in zip(pairs, POSITION_BINS):
        lv, of = live.get(name, {}), offline.get(k if k != "all" else "all", {})
        lines.append(f"| {name} | {_pct(lv.get('ua'))} | {_num(lv.get('ece'))} | {lv.get('n', 0)} | {k} | "
                     f"{_pct(of.get('ua'))} | {_num(of.get('ece'))} |")
    lv, of = live["all"], offline["all"]
    lines.append(f"| **whole session, as shown** | **{_pct(lv.get('ua'))}** | **{_num(lv.get('ece'))}** | {lv.get('n', 0)} | "
                 f"all | **{_pct(of.get('ua'))}** | **{_num(of.get('ece'))}** |")
    hs = live.get("hindsight")
    if hs and hs.get("n"):
        lines.append(f"| whole session, revised in hindsight ({hs.get('changed', 0)} labels changed) | {_pct(hs.get('ua'))} | "
                     f"{_num(hs.get('ece'))} | {hs.get('n', 0)} | all | {_pct(of.get('ua'))} | {_num(of.get('ece'))} |")
    lines += ["", f"Live minus offline (all of each speaker's clips): {100 * (lv['ua'] - of['ua']):+.1f} UA points. "
              f"NLL live {_num(lv.get('nll'))} / offline {_num(of.get('nll'))}; Brier {_num(lv.get('brier'))} / "
              f"{_num(of.get('brier'))}.",
              f"ECE a perfectly calibrated model with the same confidences would show on these utterances (sampling "
              f"alone): live {_num(lv.get('ece_calibrated'))}, offline {_num(of.get('ece_calibrated'))}; share of its "
              f"draws at or above the observed ECE: live {_num(lv.get('ece_p'))}, offline {_num(of.get('ece_p'))}.",
              f"Clips missed by the VAD/ASR: {live['missed']} of {live['clips']}; spurious results: {live['spurious']}; "
              f"forced splits: {live['forced_splits']}."]
    if "tracker" in live:
        t = live["tracker"]
        lines.append(f"Voice tracker on one-speaker sessions: voices per session {t['voices_per_session']}, share of "
                     f"utterances in the main voice {100 * t['main_voice_share_mean']:.1f}% "
                     f"({', '.join(f'{100 * v:.0f}%' for v in t['main_voice_share'])}).")
    return "\n".join(lines) + "\n"


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}%"


def _num(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    live, offline = result["live"], result["offline"]
    names = [_bin_name(lo, hi) for lo, hi in POSITION_BINS]
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(xs, [100 * live.get(n, {}).get("ua", np.nan) for n in names], "o-", label="live (memocmt-live)")
    ks = [*map(str, OFFLINE_K), "all"]
    ax.plot(xs, [100 * offline.get(k, {}).get("ua", np.nan) for k in ks], "s--",
            label="offline, K utterances + prior (K=" + ",".join(ks) + ")")
    ax.axhline(100 * offline["all"]["ua"], color="gray", linewidth=0.8, linestyle=":", label="offline, all clips")
    if live.get("hindsight", {}).get("n"):
        ax.axhline(100 * live["hindsight"]["ua"], color="tab:green", linewidth=0.8, linestyle="-.",
                   label="live, revised in hindsight")
    ax.set_xticks(xs, names)
    ax.set_xlabel("utterances of the speaker heard so far")
    ax.set_ylabel("UA (%)")
    ax.set_title(f"{result['model']}: live vs offline", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_data(args) -> tuple[Manifest, str]:
    if args.folder:
        from memocmt.corpora import build_folder

        m = build_folder(args.folder, split="speaker", speaker_pattern=args.speaker_pattern,
                         test_speakers=None, val_speakers=[])
        return Manifest.from_items(list(m), m.labels), f"folder corpus {args.folder}"
    from benchmarks.accuracy import ravdess_test

    return ravdess_test(args.ravdess), "RAVDESS test actors 17-20 (4 classes)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UA and ECE through memocmt-live, beside the offline figures.")
    parser.add_argument("--ravdess", type=Path, default=REPO.parent / "shared" / "data" / "ravdess-a01-a20")
    parser.add_argument("--folder", type=Path, help="a folder corpus <dir>/<label>/*.wav instead of RAVDESS")
    parser.add_argument("--speaker-pattern", help="with --folder: regex whose first group is the speaker in a file path")
    parser.add_argument("--label-map", help="'old=new,other=' onto the model's classes (memocmt-eval's --label-map)")
    parser.add_argument("--model", help="ONNX bundle (default: the shipped model's bundle)")
    parser.add_argument("--gap-s", type=float, default=DEFAULT_GAP_S, help="silence between clips (default: 1.0)")
    parser.add_argument("--gap-noise-dbfs", type=float, default=None, metavar="DB",
                        help="fill the silence between clips with white noise at this RMS level in dBFS (e.g. -60, "
                             "a quiet room's microphone) instead of digital zeros")
    parser.add_argument("--seed", type=int, default=0, help="clip order (default: 0)")
    parser.add_argument("--name", help="result file name (default: from the model and options)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "live_accuracy")
    parser.add_argument("--work", type=Path, help="where session WAVs and JSONL go (default: a temporary folder)")
    args, live_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.folder is None and not args.ravdess.is_dir():
        parser.error(f"RAVDESS not found at {args.ravdess}; pass --ravdess or --folder.")
    if args.folder is not None and not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is not a folder.")
    if args.model and "--model" not in live_args:
        live_args = ["--model", args.model, *live_args]
    from benchmarks.accuracy import write_result
    from benchmarks.machine import machine_info
    from memocmt.evaluate import align_labels, load_predictor, parse_label_map
    from memocmt.runtime import ensure_default_bundle, load_bundle

    bundle = load_bundle(args.model) if args.model else ensure_default_bundle()
    manifest, data_name = load_data(args)
    manifest = align_labels(manifest, bundle.labels, parse_label_map(args.label_map) if args.label_map else {})
    started = time.perf_counter()
    by_speaker: dict[str, list] = {}
    for u in manifest:
        by_speaker.setdefault(u.speaker or "", []).append(u)
    rng = np.random.default_rng(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="memocmt-live-accuracy-"))
    sessions, live_s = [], 0.0
    for speaker in sorted(by_speaker):
        wav, jsonl = work / f"session-{speaker or 'all'}.wav", work / f"session-{speaker or 'all'}.jsonl"
        clips = build_session(by_speaker[speaker], wav, args.gap_s, rng, args.gap_noise_dbfs)
        live_s += run_live(wav, jsonl, live_args)
        sessions.append({"speaker": speaker, "clips": clips, **read_jsonl(jsonl)})
        print(f"session {speaker}: {len(clips)} clips, {len(sessions[-1]['results'])} results", flush=True)
    labels = list(bundle.labels)
    result = {
        "model": args.model or "shipped", "data": data_name, "sessions": len(sessions), "gap_s": args.gap_s,
        "gap_noise_dbfs": args.gap_noise_dbfs,
        "seed": args.seed, "live_args": live_args, "machine": machine_info(),
        "live": score_live(labels, sessions), "offline": score_offline(load_predictor(str(bundle.path)), manifest),
        "live_wall_s": round(live_s, 1),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    name = args.name or ("shipped" if not args.model else Path(args.model).name) + (
        "-" + "-".join(a.lstrip("-") for a in live_args if a != args.model and a != "--model") if
        [a for a in live_args if a not in ("--model", args.model)] else "")
    write_result(args.out, name, result, to_markdown(result))
    plot(result, args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
