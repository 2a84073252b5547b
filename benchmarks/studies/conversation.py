"""With several people in one live session, does adapting to each voice beat one shared window?
For the shipped model, whose heads were trained on perturbed voices, hardly: over the six session
kinds UA is 72.7% with one shared window, 72.0% with the voice tracker and 74.7% with perfect
tracking (the previous head, trained on the actors' own voices, lost 4-7 points with a shared
window and the tracker won most of them back). `--speakers auto` stays the default because it
names the voices; the tracker's distance threshold (1.6) comes from `--select-threshold` on the
development actors. Results: benchmarks/results/conversation/shipped.md and .json.

    python benchmarks/studies/conversation.py --ravdess ../shared/data/ravdess-a01-a20 [--model CKPT_OR_BUNDLE]
    python benchmarks/studies/conversation.py --ravdess ... --select-threshold   # how the threshold was chosen

Sessions are made of the RAVDESS test actors 17-20 (4 classes; odd actors are men, even women):
each actor alone, every pair of them, or all four, their utterances either interleaved at random
or in turns of 1-4 utterances. Every utterance is
classified in session order, as `memocmt-live` would, with speaker statistics from
- shared: one window of the session's last 20 utterances (`--speakers one`);
- tracker: one window per voice the tracker tells apart (`--speakers auto`, memocmt.speakers);
- oracle: one window per true actor (what a perfect tracker would give).
Reports UA per case and how well the tracker's voices match the actors (purity: share of each
voice's utterances from its main actor; coverage: share of each actor's utterances in its main
voice).

--select-threshold reproduces the choice of memocmt.speakers.VOICE_THRESHOLD without the test
actors: voice signatures fitted on 12 of the development actors 01-16 track sessions of the other
4 (folds 01-04, 05-08, 09-12, 13-16, as the head's cross-validation), and the clustering F-measure
is printed per threshold.
Writes benchmarks/results/conversation/<model>.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from memocmt.audio import load_audio  # noqa: E402
from memocmt.evaluate import align_labels, load_predictor  # noqa: E402
from memocmt.manifest import Manifest  # noqa: E402
from memocmt.metrics import classification_report  # noqa: E402
from memocmt.speaker_norm import ADAPT_WINDOW, SpeakerAdapter  # noqa: E402
from memocmt.speakers import EmbeddingVoices, SpeakerTracker, VoiceProjection  # noqa: E402
from memocmt.voice import tracker_voices  # noqa: E402

GROUP_SIZES = (1, 2, 4)
ORDERS = ("interleaved", "turns")
MAX_TURN = 4  # utterances a speaker says in a row, "turns" order


def session_order(groups: list[list[int]], order: str, rng: np.random.Generator) -> list[int]:
    """Indices of the utterances of several speakers (one list each) in one session's order."""
    if order == "interleaved":
        out = [i for g in groups for i in g]
        rng.shuffle(out)
        return out
    queues = [list(rng.permutation(g)) for g in groups]
    out, last = [], -1
    while any(queues):
        choices = [k for k, q in enumerate(queues) if q and (k != last or sum(map(bool, queues)) == 1)]
        k = int(rng.choice(choices))
        take = int(rng.integers(1, MAX_TURN + 1))
        out += [int(i) for i in queues[k][:take]]
        queues[k] = queues[k][take:]
        last = k
    return out


def sessions(speakers: list, by_speaker: dict, size: int, order: str, n: int, rng: np.random.Generator) -> list[list[int]]:
    """n sessions of `size` speakers each, going through every group of that size in turn."""
    groups = list(combinations(speakers, size))
    return [session_order([by_speaker[g] for g in groups[s % len(groups)]], order, rng) for s in range(n)]


def clustering(voices: list[int], truth: list) -> tuple[float, float]:
    """(purity, coverage) of voice assignments against true speakers."""
    voices, truth = np.asarray(voices), np.asarray(truth)
    purity = sum(Counter(truth[voices == v]).most_common(1)[0][1] for v in set(voices.tolist())) / len(voices)
    coverage = sum(Counter(voices[truth == t]).most_common(1)[0][1] for t in set(truth.tolist())) / len(voices)
    return purity, coverage


def track(order: list[int], stats: np.ndarray, speakers: list, voices, prior,
          window: int = ADAPT_WINDOW, signatures: np.ndarray | None = None) -> dict:
    """Speaker statistics per utterance of one session, for each way of pooling, and the tracker's
    voices; "shared" and "tracker" are memocmt-live's --speakers one and auto. `signatures`: each
    utterance's precomputed voice signature (speaker embeddings), else the tracker computes them."""
    shared, per_speaker = SpeakerTracker(None, window, prior), {}
    tracker = SpeakerTracker(voices, window, prior) if voices is not None else None
    out = {"shared": [], "oracle": [], "tracker": [], "voices": []}
    for i in order:
        out["shared"].append(shared.update(stats[i])[0][0])
        adapter = per_speaker.setdefault(speakers[i], SpeakerAdapter(window, prior))
        out["oracle"].append(adapter.update(stats[i])[0])
        if tracker is not None:
            pooled, voice = tracker.update(stats[i], signature=None if signatures is None else signatures[i])
            out["tracker"].append(pooled[0])
            out["voices"].append(voice)
    return out


def run(predictor, manifest, n_sessions: int, seed: int = 0, speakers: str = "auto") -> dict:
    items = list(manifest)
    audios = [load_audio(u.audio) for u in items]
    texts = [u.text for u in items]
    stats = predictor.audio_stats(audios)
    speakers = [u.speaker for u in items]
    targets = manifest.targets()
    by_speaker: dict = {}
    for i, s in enumerate(speakers):
        by_speaker.setdefault(s, []).append(i)
    names = sorted(by_speaker)
    voices = tracker_voices(getattr(predictor, "voices", None), speakers)
    signatures = embed_all(voices, audios)
    methods = ("shared", "tracker", "oracle") if voices is not None else ("shared", "oracle")
    rng = np.random.default_rng(seed)
    rows = []
    for size in GROUP_SIZES:
        for order in ORDERS:
            count = min(n_sessions, len(names)) if size == 1 else n_sessions
            preds = {m: [] for m in methods}
            truth, fits = [], []
            for session in sessions(names, by_speaker, size, order, count, rng):
                pooled = track(session, stats, speakers, voices, predictor.speaker_prior, signatures=signatures)
                for m in methods:
                    batch = predictor.predict_batch([audios[i] for i in session], [texts[i] for i in session],
                                                    speaker_stats=np.stack(pooled[m]))
                    preds[m] += [predictor.labels.index(p.label) for p in batch]
                truth += [targets[i] for i in session]
                if voices is not None:
                    fits.append(clustering(pooled["voices"], [speakers[i] for i in session]))
            row = {"speakers": size, "order": order, "sessions": count, "utterances": len(truth)}
            for m in methods:
                row[m] = classification_report(truth, preds[m], predictor.labels).ua
            if fits:
                row["purity"], row["coverage"] = (float(np.mean([f[k] for f in fits])) for k in (0, 1))
            rows.append(row)
            logging.getLogger("memocmt").info("%s", row)
    return {"rows": rows, "methods": list(methods), "voices": type(voices).__name__ if voices is not None else None,
            "threshold": getattr(voices, "threshold", None)}


def embed_all(voices, audios: list[np.ndarray]) -> np.ndarray | None:
    """Every utterance's speaker embedding when the voices come from the audio, else None."""
    if voices is None or not voices.needs_audio:
        return None
    return np.stack([voices.signature(None, a) for a in audios])


def select_threshold(predictor, manifest, thresholds: np.ndarray, n_sessions: int = 6, seed: int = 0,
                     widen_young: bool = True, speakers: str = "auto") -> list[dict]:
    """Clustering F-measure per threshold, voice signatures fitted on 12 development actors and
    scored on sessions of the other 4 (4 folds); no test actor involved. With speaker embeddings
    (memocmt.voice) nothing is fitted and the same sessions score each cosine-distance threshold."""
    items = list(manifest)
    audios = [load_audio(u.audio) for u in items]
    stats = predictor.audio_stats(audios)
    embedded = tracker_voices(getattr(predictor, "voices", None), speakers)
    signatures = embed_all(embedded, audios)
    speakers = [u.speaker for u in items]
    names = sorted(set(speakers))
    folds = [names[k : k + 4] for k in range(0, len(names), 4)]  # actors 01-04, 05-08, ...: the head's CV folds
    by_speaker: dict = {}
    for i, s in enumerate(speakers):
        by_speaker.setdefault(s, []).append(i)
    rows = []
    for threshold in thresholds:
        scores, rng = [], np.random.default_rng(seed)
        by_size: dict[int, list[float]] = {size: [] for size in GROUP_SIZES}
        for held in folds:
            fit_idx = [i for i, s in enumerate(speakers) if s not in held]
            if signatures is not None:  # speaker embeddings: nothing is fitted, only the threshold varies
                voices = EmbeddingVoices(embedded.encoder, float(threshold), widen_young=widen_young)
            else:
                voices = VoiceProjection.fit(stats[fit_idx], [speakers[i] for i in fit_idx], threshold=float(threshold))
            for size in GROUP_SIZES:
                for session in sessions(held, by_speaker, size, "interleaved", n_sessions, rng):
                    tracker = SpeakerTracker(voices)
                    assigned = [tracker.update(stats[i], signature=None if signatures is None else signatures[i])[1]
                                for i in session]
                    purity, coverage = clustering(assigned, [speakers[i] for i in session])
                    scores.append(2 * purity * coverage / (purity + coverage))
                    by_size[size].append(scores[-1])
        rows.append({"threshold": round(float(threshold), 3), "f_measure": float(np.mean(scores)),
                     **{f"f_{size}": float(np.mean(f)) for size, f in by_size.items()}})
        print(f"threshold {threshold:.3f}: clustering F {np.mean(scores):.3f} ("
              + ", ".join(f"{size} speakers {np.mean(f):.3f}" for size, f in by_size.items()) + ")", flush=True)
    return rows


def to_markdown(result: dict) -> str:
    methods = result["methods"]
    lines = [f"# Several speakers in one session: {result['model']}", "",
             f"RAVDESS test actors 17-20, {result['classes']} classes; UA with speaker statistics pooled per session "
             f"(window {ADAPT_WINDOW}) three ways. Machine: {result['machine']}; {result['seconds']} s.", "",
             "| speakers | order | sessions | utterances | " + " | ".join(f"UA {m}" for m in methods) + " | purity | coverage |",
             "|---:|---|---:|---:|" + "---:|" * len(methods) + "---:|---:|"]
    for r in result["rows"]:
        fit = (f"{r['purity']:.2f} | {r['coverage']:.2f}" if "purity" in r else "- | -")
        lines.append(f"| {r['speakers']} | {r['order']} | {r['sessions']} | {r['utterances']} | "
                     + " | ".join(f"{100 * r[m]:.1f}%" for m in methods) + f" | {fit} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UA of live speaker adaptation with several speakers per session.")
    parser.add_argument("--ravdess", type=Path, default=REPO.parent / "shared" / "data" / "ravdess-a01-a20")
    parser.add_argument("--model", help="checkpoint or ONNX bundle (default: the shipped model)")
    parser.add_argument("--sessions", type=int, default=6, help="sessions per case (default: 6)")
    parser.add_argument("--select-threshold", action="store_true",
                        help="score thresholds on the development actors 01-16 instead (no test actor)")
    parser.add_argument("--no-widen", action="store_true",
                        help="with --select-threshold and speaker embeddings: score without the young-voice widening")
    parser.add_argument("--speakers", choices=["auto", "ge2e"], default="auto",
                        help="what tells voices apart: the model's voice signatures (auto) or GE2E speaker embeddings")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "conversation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not args.ravdess.is_dir():
        parser.error(f"RAVDESS not found at {args.ravdess}; pass --ravdess.")
    if args.sessions < 1:
        parser.error("--sessions must be at least 1.")
    from benchmarks.accuracy import ravdess_split, write_result

    predictor = load_predictor(args.model)
    if not getattr(predictor, "speaker_norm", ""):
        parser.error(f"{args.model or 'the shipped model'} is not speaker-normalised; nothing adapts.")
    split = align_labels(ravdess_split(args.ravdess), predictor.labels)
    started = time.perf_counter()
    if args.select_threshold:
        dev = Manifest.from_items([u for u in split if u.split != "test"], split.labels)
        embeddings = tracker_voices(getattr(predictor, "voices", None), args.speakers)
        if embeddings is not None and embeddings.needs_audio:
            select_threshold(predictor, dev, np.arange(0.10, 0.551, 0.025), widen_young=not args.no_widen,
                             speakers=args.speakers)
        else:
            select_threshold(predictor, dev, np.arange(1.0, 2.61, 0.1))
        return 0
    if getattr(predictor, "voices", None) is None:
        logging.warning("%s has no voice signatures: only the shared and oracle windows are compared",
                        args.model or "the shipped model")
    result = run(predictor, split.split("test"), args.sessions, speakers=args.speakers)
    name = (Path(args.model).stem if args.model else "shipped") + ("-ge2e" if args.speakers == "ge2e" else "")
    result.update(model=args.model or "shipped", classes=len(predictor.labels), machine=platform.platform(),
                  seconds=round(time.perf_counter() - started, 1))
    write_result(args.out, name, result, to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
