"""Accuracy in noisy and reverberant rooms, live and offline, one command.

    python benchmarks/robustness.py                                  # the whole grid, default front end
    python benchmarks/robustness.py --tag dfn3 --denoise dfn3        # extra args go to memocmt-live
    python benchmarks/robustness.py --conditions clean "babble 10" "room 0.6 3" --tag quick

One clean session per RAVDESS test actor (17-20), built as benchmarks/live_accuracy.py builds
them (28 clips in a seeded order, 1 s of digital silence between them). Each condition
(memocmt.degrade) is applied to the whole session WAV, keyed by the session's name, so noise runs
through the pauses as it does in a room; babble is made of clips of the training actors 01-14
only. Then:

* live: the degraded session streamed through `memocmt-live --input S --fast` (with any extra
  options, e.g. `--denoise dfn3`, `--vad silero`), results matched to clips by overlap;
* offline: each clip cut from the same degraded session at its true bounds (the same noise
  samples live hears) and scored with memocmt.evaluate, every speaker's statistics pooled over all
  of its clips, with the manifest's transcripts (so offline measures the acoustics alone, not ASR
  errors). With `--denoise` the offline clips are cut from the whole session enhanced once, when
  the options give the emotion model the enhanced signal.

UA and ECE per condition, live and offline, go to <out>/<tag>.json and .md; <tag>.png plots UA
against SNR per noise type; comparison.md and comparison.png set every tag in <out> side by side.
Live runs of different conditions go side by side with `--jobs` (default 2).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memocmt.audio import SAMPLE_RATE, load_audio  # noqa: E402
from memocmt.degrade import Condition, ConditionError  # noqa: E402
from memocmt.live.errors import LiveError  # noqa: E402

NOISES = ("pink", "white", "brown", "babble", "clicks")
GRID_NOISES = ("pink", "babble", "clicks")  # white and brown on request (--conditions "white 10")
SNRS_DB = (30, 20, 10, 5)
ROOMS = ((0.3, 1), (0.3, 3), (0.6, 1), (0.6, 3), (0.9, 1), (0.9, 3))  # (RT60 s, talker distance m)
CLEAN = "clean"
GRID = (CLEAN, *(f"{n} {s}" for n in GRID_NOISES for s in SNRS_DB), *(f"room {rt:g} {d:g}" for rt, d in ROOMS),
        "telephone", "clip 20", "level -30")
TRAIN_ACTORS = range(1, 15)  # the babble's talkers: never the test actors
BABBLE_CLIPS_PER_ACTOR = 6
OUT = REPO / "benchmarks" / "results" / "robustness"


def parse_grid(specs: list[str]) -> list[Condition | None]:
    """Condition specs (and 'clean', as None) in order, each once; a bad spec raises ConditionError."""
    out: list[Condition | None] = []
    for spec in specs:
        out.append(None if spec.strip() == CLEAN else Condition.parse(spec))
    names = [condition_name(c) for c in out]
    if len(set(names)) != len(names):
        raise ConditionError(f"--conditions {specs} repeat one; list each once.")
    return out


def condition_name(condition: Condition | None) -> str:
    return CLEAN if condition is None else condition.name


def condition_spec(condition: Condition | None) -> str:
    return CLEAN if condition is None else condition.spec


def babble_sources(ravdess: Path, per_actor: int = BABBLE_CLIPS_PER_ACTOR, seed: int = 0) -> list[np.ndarray]:
    """A seeded handful of clips of each training actor (01-14), loaded at 16 kHz."""
    from benchmarks.accuracy import ravdess_split

    items = [u for u in ravdess_split(ravdess) if u.split == "train"]
    rng = np.random.default_rng(seed)
    picked = []
    for actor in sorted({u.speaker for u in items}):
        mine = [u for u in items if u.speaker == actor]
        picked += [mine[int(i)] for i in rng.permutation(len(mine))[:per_actor]]
    return [load_audio(u.audio) for u in picked]


def degrade(audio: np.ndarray, condition: Condition | None, key: str, sources: list[np.ndarray] | None) -> np.ndarray:
    """A session as heard in `condition` (None: as recorded)."""
    if condition is None:
        return np.asarray(audio, dtype=np.float32)
    return condition.apply(audio, key=key, sources=sources if condition.needs_sources else None)


def cut_clips(audio: np.ndarray, clips: list) -> list[np.ndarray]:
    """Each clip's samples from a session, at the bounds `build_session` recorded."""
    return [audio[int(round(c.start_s * SAMPLE_RATE)): int(round(c.end_s * SAMPLE_RATE))] for c in clips]


@dataclasses.dataclass
class FrontEnd:
    """What the extra memocmt-live options do to the signal the offline emotion model should see."""

    denoise: str = "off"
    denoise_for: tuple[str, ...] = ()

    @classmethod
    def from_live_args(cls, live_args: list[str]) -> "FrontEnd":
        from memocmt.live.cli import build_parser

        from memocmt.live.denoise import parse_targets

        known, _ = build_parser().parse_known_args(live_args)
        return cls(known.denoise, parse_targets(known.denoise_for) if known.denoise != "off" else ())

    @property
    def enhances_emotion(self) -> bool:
        return self.denoise != "off" and "emotion" in self.denoise_for


def offline_audio(audio: np.ndarray, front: FrontEnd) -> np.ndarray:
    """The session the offline emotion model hears: as degraded, or enhanced whole with the live denoiser."""
    if not front.enhances_emotion:
        return audio
    from memocmt.denoise import enhance

    return enhance(audio, front.denoise)


def write_wav(path: Path, audio: np.ndarray, subtype: str = "PCM_16") -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype=subtype)


def prepare_condition(condition: Condition | None, sessions: list[dict], work: Path, sources, front: FrontEnd,
                      offline: bool = True):
    """Write the degraded session WAVs and the offline clips of one condition; returns (wavs, offline manifest items)."""
    folder = work / condition_name(condition)
    wavs, items = [], []
    for s in sessions:
        audio = degrade(s["audio"], condition, s["name"], sources)
        wav = folder / f"{s['name']}.wav"
        write_wav(wav, audio)
        wavs.append(wav)
        if not offline:
            continue
        heard = offline_audio(load_audio(wav), front)  # what live reads: the 16-bit file
        for clip, item, piece in zip(s["clips"], s["items"], cut_clips(heard, s["clips"])):
            path = folder / "clips" / f"{Path(str(item.audio)).stem}.wav"
            write_wav(path, piece, "FLOAT")
            items.append(dataclasses.replace(item, audio=path))
    return wavs, items


def run_condition_live(wavs: list[Path], live_args: list[str]) -> tuple[list[dict], float]:
    from benchmarks.live_accuracy import read_jsonl, run_live

    results, seconds = [], 0.0
    for wav in wavs:
        jsonl = wav.with_suffix(".jsonl")
        seconds += run_live(wav, jsonl, live_args)
        results.append(read_jsonl(jsonl))
    return results, seconds


def score_condition(labels: list[str], sessions: list[dict], results: list[dict]) -> dict:
    """Live UA/ECE of one condition over the clips heard, with missed and spurious clips, and `ua_missed_wrong`:
    UA over every clip, a clip that no result covers counting as wrong (a front end that loses utterances pays)."""
    from benchmarks.live_accuracy import match, score_live

    live = score_live(labels, [{"clips": s["clips"], **r} for s, r in zip(sessions, results)])
    right = np.zeros(len(labels))
    total = np.zeros(len(labels))
    for s, r in zip(sessions, results):
        matched, _ = match(s["clips"], r["results"])
        for i, clip in enumerate(s["clips"]):
            k = labels.index(clip.label)
            total[k] += 1
            if i in matched:
                probs = matched[i]["probabilities"]
                right[k] += max(labels, key=lambda c: probs[c]) == clip.label
    ua_missed_wrong = float(np.mean(right[total > 0] / total[total > 0])) if total.any() else None
    return {**live["all"], "ua_missed_wrong": ua_missed_wrong, "clips": live["clips"], "missed": live["missed"],
            "spurious": live["spurious"], "hindsight": live["hindsight"]}


def score_offline(predictor, labels: list[str], items: list) -> dict:
    from memocmt.evaluate import evaluate_speaker_utterances
    from memocmt.manifest import Manifest

    result = evaluate_speaker_utterances(predictor, Manifest.from_items(items, labels), (0,), batch_size=16,
                                         progress=False)[0]
    return {"n": result.report.n, "ua": result.report.ua, "wa": result.report.wa, "ece": result.calibration.ece}


# ---------------------------------------------------------------------------- report


def _x(spec: str) -> tuple[str, float | None]:
    parts = spec.split()
    if parts[0] in NOISES and len(parts) == 2:
        return parts[0], float(parts[1])
    return parts[0], None


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def to_markdown(result: dict) -> str:
    from benchmarks.machine import describe

    lines = [f"# Robustness: {result['tag']}", "",
             f"{result['data']}, one session per actor ({result['clips']} clips); live: `memocmt-live --input S --fast "
             f"{' '.join(result['live_args'])}`; offline: the clips cut from the same degraded session"
             + (f", enhanced ({result['front_end']['denoise']})" if result["front_end"]["enhances_emotion"] else "")
             + f", memocmt.evaluate with each speaker's statistics over all its clips. Model: {result['model']}. "
             f"Machine: {describe(result['machine'])}; {result['seconds']:.0f} s.", "",
             "Live UA is over the clips heard; 'missed = wrong' counts every clip, one no result covers as wrong.", "",
             "| condition | live UA | live ECE | live UA, missed = wrong | missed | spurious | offline UA | offline ECE |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["conditions"]:
        lv, of = row["live"], row["offline"]
        lines.append(f"| {row['spec']} | {_pct(lv.get('ua'))} | {_num(lv.get('ece'))} | {_pct(lv.get('ua_missed_wrong'))} "
                     f"| {lv['missed']} | {lv['spurious']} "
                     f"| {_pct(of.get('ua'))} | {_num(of.get('ece'))} |")
    return "\n".join(lines) + "\n"


def comparison_markdown(results: list[dict]) -> str:
    """Live (and offline) UA of every tag side by side, one row per condition."""
    tags = [r["tag"] for r in results]
    specs = list(dict.fromkeys(row["spec"] for r in results for row in r["conditions"]))
    by = {(r["tag"], row["spec"]): row for r in results for row in r["conditions"]}
    lines = ["# Robustness: front ends side by side", "",
             "UA % live on the clips heard / live with a missed clip counting as wrong / offline (live ECE) per "
             "condition; `-`: not run. "
             + "; ".join(f"**{r['tag']}**: `{' '.join(r['live_args']) or '(default options)'}`" for r in results), "",
             "| condition | " + " | ".join(tags) + " |", "|---|" + "---:|" * len(tags)]
    for spec in specs:
        cells = []
        for tag in tags:
            row = by.get((tag, spec))
            cells.append("-" if row is None else f"{_pct(row['live'].get('ua'))} / {_pct(row['live'].get('ua_missed_wrong'))} / "
                                                 f"{_pct(row['offline'].get('ua'))} ({_num(row['live'].get('ece'))})")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path, offline: bool = True) -> None:
    """UA against SNR, one panel per noise type; lines per tag: live on the clips heard (solid), live with missed
    clips counted wrong (dash-dot), offline (dashed); the clean session's live UA dotted."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    kinds = [k for k in NOISES if any(_x(row["spec"])[0] == k for r in results for row in r["conditions"])]
    if not kinds:
        return
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3.4), sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], kinds):
        for i, r in enumerate(results):
            colour = colours[i % len(colours)]
            pts = sorted((_x(row["spec"])[1], row) for row in r["conditions"] if _x(row["spec"])[0] == kind)
            xs = [p for p, _ in pts]
            ax.plot(xs, [100 * row["live"].get("ua", np.nan) for _, row in pts], "o-", color=colour, label=f"{r['tag']} live")
            ax.plot(xs, [100 * (row["live"].get("ua_missed_wrong") or np.nan) for _, row in pts], "^-.", color=colour,
                    alpha=0.8, label=f"{r['tag']} live, missed = wrong")
            if offline:
                ax.plot(xs, [100 * row["offline"].get("ua", np.nan) for _, row in pts], "s--", color=colour,
                        alpha=0.6, label=f"{r['tag']} offline")
            clean = [row for row in r["conditions"] if row["spec"] == CLEAN]
            if clean:
                ax.axhline(100 * clean[0]["live"].get("ua", np.nan), color=colour, linestyle=":", linewidth=0.8)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("UA (%)  (dotted: clean, live)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_comparison(out: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    results = [r for r in results if "conditions" in r and "tag" in r]
    if not results:
        return
    (out / "comparison.md").write_text(comparison_markdown(results))
    plot(results, out / "comparison.png", offline=False)


# ---------------------------------------------------------------------------- main


def build_sessions(ravdess: Path, work: Path, labels: list[str], gap_s: float, seed: int) -> list[dict]:
    """One clean session per test actor: audio, clip bounds and the manifest rows in session order."""
    from benchmarks.accuracy import ravdess_test
    from benchmarks.live_accuracy import build_session
    from memocmt.evaluate import align_labels

    manifest = align_labels(ravdess_test(ravdess), labels)
    by_speaker: dict[str, list] = {}
    for u in manifest:
        by_speaker.setdefault(u.speaker, []).append(u)
    rng = np.random.default_rng(seed)
    sessions = []
    for speaker in sorted(by_speaker):
        name = f"session-{speaker}"
        wav = work / CLEAN / f"{name}.wav"
        clips = build_session(by_speaker[speaker], wav, gap_s, rng)
        rows = {u.id or str(u.audio): u for u in by_speaker[speaker]}
        sessions.append({"name": name, "audio": load_audio(wav), "clips": clips, "items": [rows[c.id] for c in clips]})
    return sessions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UA and ECE in noise, reverberation and device conditions, live and "
                                                 "offline; unknown options go to memocmt-live.")
    parser.add_argument("--ravdess", type=Path, default=REPO.parent / "shared" / "data" / "ravdess-a01-a20")
    parser.add_argument("--conditions", nargs="+", metavar="SPEC", default=list(GRID),
                        help="'clean' and memocmt.degrade specs ('pink 20', 'babble 10', 'room 0.6 3', 'telephone', ...); "
                             "default: the whole grid")
    parser.add_argument("--tag", default="default", help="name of this front end's results (default: default)")
    parser.add_argument("--jobs", type=int, default=2, help="conditions streamed through memocmt-live at once (default: 2)")
    parser.add_argument("--only", choices=("live", "offline"), help="score one path only (default: both)")
    parser.add_argument("--gap-s", type=float, default=1.0, help="silence between clips (default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="clip order and babble clips (default: 0)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, help="where session WAVs and JSONL go (default: a temporary folder)")
    args, live_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not args.ravdess.is_dir():
        parser.error(f"RAVDESS not found at {args.ravdess}; pass --ravdess.")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1.")
    if not args.tag.replace("-", "").replace("_", "").replace(".", "").isalnum():
        parser.error(f"--tag {args.tag!r}: use letters, digits, '-', '_' or '.' (it names the result files).")
    try:
        conditions = parse_grid(args.conditions)
        front = FrontEnd.from_live_args(live_args)
    except (ConditionError, LiveError) as e:
        parser.error(str(e))
    from benchmarks.machine import machine_info
    from memocmt.evaluate import load_predictor
    from memocmt.runtime import ensure_default_bundle

    started = time.perf_counter()
    bundle = ensure_default_bundle()
    labels = list(bundle.labels)
    predictor = load_predictor(str(bundle.path))
    work = Path(args.work or tempfile.mkdtemp(prefix="memocmt-robustness-"))
    sessions = build_sessions(args.ravdess, work, labels, args.gap_s, args.seed)
    sources = babble_sources(args.ravdess, seed=args.seed) if any(c is not None and c.needs_sources for c in conditions) \
        else None
    rows: dict[str, dict] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        pending = {}
        offline = {}
        for condition in conditions:  # degrade and score offline here while earlier conditions stream live
            wavs, items = prepare_condition(condition, sessions, work, sources, front, offline=args.only != "live")
            pending[condition_name(condition)] = (condition, pool.submit(run_condition_live, wavs, live_args)
                                                  if args.only != "offline" else None)
            offline[condition_name(condition)] = {} if args.only == "live" else score_offline(predictor, labels, items)
        for name, (condition, future) in pending.items():
            results, live_s = future.result() if future is not None else (None, 0.0)
            rows[name] = {"spec": condition_spec(condition), "name": name,
                          "live": score_condition(labels, sessions, results) if results is not None else
                          {"missed": "-", "spurious": "-"}, "offline": offline[name],
                          "live_wall_s": round(live_s, 1)}
            print(f"{condition_spec(condition):>12}: live UA {_pct(rows[name]['live'].get('ua'))} "
                  f"offline UA {_pct(offline[name].get('ua'))}", flush=True)
    result = {"tag": args.tag, "model": str(bundle.path.name), "data": "RAVDESS test actors 17-20 (4 classes)",
              "clips": sum(len(s["clips"]) for s in sessions), "gap_s": args.gap_s, "seed": args.seed,
              "live_args": live_args, "front_end": {**dataclasses.asdict(front), "enhances_emotion": front.enhances_emotion},
              "machine": machine_info(), "conditions": [rows[condition_name(c)] for c in conditions]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    from benchmarks.accuracy import write_result

    write_result(args.out, args.tag, result, to_markdown(result))
    plot([result], args.out / f"{args.tag}.png")
    write_comparison(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
