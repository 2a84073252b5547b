"""`memocmt-prepare`: write the manifest of a corpus, or generate the synthetic corpus.

    memocmt-prepare --list
    memocmt-prepare ravdess ../shared/data/ravdess-a01-a20 --out data/ravdess.jsonl --classes 4
    memocmt-prepare iemocap IEMOCAP_full_release --out data/iemocap-loso1.jsonl --split loso --fold 1
    memocmt-prepare folder my_corpus --out data/mine.jsonl --speaker-pattern '^(\\d+)_' --transcribe
    memocmt-prepare synthetic data/synthetic --n-per-class 50
    memocmt-prepare nemo ../shared/data/nemo-pl --out data/nemo.jsonl --test-speakers SB0,MP0 --val-speakers AD0
    memocmt-prepare table my_corpus.csv --out data/mine.jsonl --audio-col path --label-col emotion --speaker-col who --language de
    memocmt-prepare merge data/ravdess.jsonl data/nemo.jsonl --out data/ravdess+nemo.jsonl

The manifest is validated (audio readable, every split present, no speaker in both train and
test for speaker-independent splits) before it is written. User errors print one line to
stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from memocmt.corpora import CORPORA, build_corpus
from memocmt.manifest import Manifest, validate_manifest, write_manifest

logger = logging.getLogger("memocmt")

PROG = "memocmt-prepare"
SPLITS_WITH_SHARED_SPEAKERS = ("random", "official")  # the paper's random splits; MELD/ESD official


def build_parser() -> argparse.ArgumentParser:
    all_classes = sorted({c for a in CORPORA.values() for c in a.classes if c}, key=int)
    all_splits = sorted({s for a in CORPORA.values() for s in a.splits})
    p = argparse.ArgumentParser(prog=PROG, description="Write a JSONL manifest for a corpus, or generate the synthetic corpus.")
    p.add_argument("corpus", nargs="?", choices=[*CORPORA, "synthetic"], help="corpus layout to read (see --list)")
    p.add_argument("root", nargs="?", type=Path, help="corpus root directory; for synthetic, the output directory")
    p.add_argument("--list", action="store_true", help="list the corpora and their options, then exit")
    p.add_argument("--out", type=Path, help="manifest to write (synthetic: default OUT_DIR/manifest.jsonl)")
    p.add_argument("--classes", choices=all_classes, help="class set, e.g. 4 (neutral, happy, sad, angry); default per corpus")
    p.add_argument("--split", choices=all_splits, help="how to split; default per corpus (see --list)")
    p.add_argument("--fold", type=int, help="IEMOCAP leave-one-session-out fold, 1..5 (with --split loso)")
    p.add_argument("--seed", type=int, default=0, help="seed of random and speaker splits (default 0, as in the paper)")
    p.add_argument("--speaker-pattern", help="folder corpus: regex finding the speaker in a file name")
    p.add_argument("--test-speakers", help="comma-separated speakers for test (ravdess, cremad, folder)")
    p.add_argument("--val-speakers", help="comma-separated speakers for val (ravdess, cremad, folder)")
    p.add_argument("--transcribe", action="store_true", help="replace transcripts with cached faster-whisper ASR")
    p.add_argument("--asr-model", default="", help="faster-whisper model name or directory (default: offline tiny.en)")
    p.add_argument("--asr-cache", type=Path, help="transcript cache file (default: next to --out, asr_cache.json)")
    p.add_argument("--language", help="--transcribe: spoken language, auto|en|pl|... (default: each utterance's "
                   "manifest language, else en; an English-only model takes en only)")
    p.add_argument("--skip-bad", action="store_true", help="drop unreadable or duplicate rows instead of stopping")
    p.add_argument("--n-per-class", type=int, default=50, help="synthetic: utterances per class (default 50)")
    p.add_argument("--conflict-fraction", type=float, default=0.2, help="synthetic: share of text-led/voice-led items")
    p.add_argument("--jobs", type=int, default=2, help="synthetic: parallel synthesis processes (default 2)")
    return p


def list_corpora() -> str:
    lines = []
    for a in CORPORA.values():
        classes = f" classes {'|'.join(a.classes)}" if any(a.classes) else ""
        lines.append(f"{a.name:<9} {a.description}\n{'':<9} splits {'|'.join(a.splits)} (default {a.splits[0]}){classes}")
    lines.append(f"{'synthetic':<9} espeak-ng + sox emotional speech generated locally, 4 classes, split by voice")
    return "\n".join(lines)


def corpus_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The adapter keyword options for the given flags; flags the corpus does not take are errors."""
    adapter = CORPORA[args.corpus]
    given = {
        "classes": args.classes,
        "split": args.split,
        "fold": args.fold,
        "speaker_pattern": args.speaker_pattern,
        "test_speakers": _names(args.test_speakers),
        "val_speakers": _names(args.val_speakers),
    }
    options = {k: v for k, v in given.items() if v is not None}
    for key in options:
        if key not in adapter.options:
            parser.error(f"--{key.replace('_', '-')} does not apply to {args.corpus}.")
    if args.classes and args.classes not in adapter.classes:
        parser.error(f"{args.corpus} has no class set {args.classes}; choose one of {', '.join(adapter.classes)}.")
    if args.split and args.split not in adapter.splits:
        parser.error(f"{args.corpus} has no split {args.split!r}; choose one of {', '.join(adapter.splits)}.")
    if args.fold is not None and (args.split or adapter.splits[0]) != "loso":
        parser.error("--fold needs --split loso.")
    if "seed" in adapter.options:
        options["seed"] = args.seed
    return options


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def prepare_corpus(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Manifest:
    if args.out is None:
        parser.error(f"--out is required for {args.corpus}.")
    if args.language and not args.transcribe:
        parser.error("--language applies to --transcribe only.")
    options = corpus_options(args, parser)
    manifest = build_corpus(args.corpus, args.root, **options)
    if args.transcribe:
        from memocmt.transcribe_cache import AsrConfig, transcribe_manifest

        cache = args.asr_cache or args.out.parent / "asr_cache.json"
        language = {"language": args.language} if args.language else {}
        manifest = transcribe_manifest(manifest, cache, AsrConfig(model=args.asr_model, **language),
                                       per_utterance_language=not args.language)
    split = options.get("split", CORPORA[args.corpus].splits[0])
    required = None
    if manifest.items and all(u.split == "test" for u in manifest.items):  # every speaker named for test
        logger.info("Every utterance is in the test split: an evaluation-only manifest (no train or val split).")
        required = ("test",)
    result = validate_manifest(
        manifest, on_error="skip" if args.skip_bad else "raise",
        allow_speaker_overlap=split in SPLITS_WITH_SHARED_SPEAKERS, **({"required_splits": required} if required else {}),
    )
    write_manifest(args.out, result.manifest)
    return result.manifest


def prepare_synthetic(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Manifest:
    from memocmt.synthetic import generate_synthetic_corpus

    for flag in ("classes", "split", "fold", "speaker_pattern", "test_speakers", "val_speakers"):
        if getattr(args, flag) is not None:
            parser.error(f"--{flag.replace('_', '-')} does not apply to the synthetic corpus.")
    if args.n_per_class < 1:
        parser.error("--n-per-class must be at least 1.")
    manifest = generate_synthetic_corpus(
        args.root, n_per_class=args.n_per_class, seed=args.seed, conflict_fraction=args.conflict_fraction, jobs=args.jobs
    )
    if args.out is not None:
        write_manifest(args.out, manifest)
    else:
        args.out = args.root / "manifest.jsonl"
    return manifest


def cli(argv: list[str] | None = None) -> int:
    from memocmt.corpora.folder import pattern_argv

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(pattern_argv(argv))
    if args.list:
        print(list_corpora())
        return 0
    if args.corpus is None or args.root is None:
        parser.error("give a corpus and its root directory (or --list).")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.corpus == "synthetic":
            manifest = prepare_synthetic(args, parser)
        else:
            manifest = prepare_corpus(args, parser)
    except (ValueError, RuntimeError, OSError) as e:  # CorpusError, ManifestError, AudioError, missing tools
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {len(manifest)} utterances to {args.out}")
    print(manifest.summary())
    return 0


# ----------------------------------------------------------------------------- table and merge


def table_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} table", description="Write the manifest of a corpus listed in a CSV/TSV table, one row per utterance.")
    p.add_argument("table", type=Path, help="CSV or TSV file (a tab delimiter for .tsv/.tab, else a comma)")
    p.add_argument("--out", type=Path, required=True, help="manifest to write")
    p.add_argument("--audio-col", default="audio", help="column of the audio file, relative to --audio-root (default: audio)")
    p.add_argument("--label-col", default="label", help="column of the emotion label (default: label)")
    p.add_argument("--speaker-col", default="speaker", help="column of the speaker id (default: speaker)")
    p.add_argument("--text-col", default="", help="column of the transcript (default: none)")
    lang = p.add_mutually_exclusive_group()
    lang.add_argument("--language", default="", help="language code of every row, e.g. en, pl, de (default: unknown)")
    lang.add_argument("--language-col", default="", help="column of each row's language code")
    p.add_argument("--corpus", default="", help="corpus name kept in every utterance (default: the table's file name)")
    p.add_argument("--label-map", default="", help="'happiness=happy,fear=' renames labels; an empty target drops the class")
    p.add_argument("--audio-root", type=Path, help="folder relative audio paths start from (default: the table's folder)")
    p.add_argument("--delimiter", default="", help="column delimiter (default: by file extension)")
    p.add_argument("--split", choices=("speaker", "random"), default="speaker", help="how to split (default: speaker)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--test-speakers", help="comma-separated speakers for test")
    p.add_argument("--val-speakers", help="comma-separated speakers for val")
    p.add_argument("--skip-bad", action="store_true", help="drop unreadable or duplicate rows instead of stopping")
    return p


def table_cli(argv: list[str]) -> int:
    args = table_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = build_corpus(
            "table", args.table, audio_col=args.audio_col, label_col=args.label_col, speaker_col=args.speaker_col,
            text_col=args.text_col, language=args.language, language_col=args.language_col, corpus=args.corpus,
            label_map=args.label_map, audio_root=args.audio_root, delimiter=args.delimiter, split=args.split,
            seed=args.seed, test_speakers=_names(args.test_speakers), val_speakers=_names(args.val_speakers),
        )
        result = validate_manifest(manifest, on_error="skip" if args.skip_bad else "raise",
                                   allow_speaker_overlap=args.split == "random")
        write_manifest(args.out, result.manifest)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {len(result.manifest)} utterances to {args.out}")
    print(result.manifest.summary())
    return 0


def merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} merge", description="Concatenate manifests of several corpora into one, "
                                "keeping each utterance's corpus, language and speaker.")
    p.add_argument("manifests", nargs="+", type=Path, help="JSONL manifests to merge, in order")
    p.add_argument("--out", type=Path, required=True, help="merged manifest to write")
    p.add_argument("--allow-speaker-overlap", action="store_true",
                   help="accept a speaker in both train and test (manifests with random splits)")
    return p


def merge_cli(argv: list[str]) -> int:
    from memocmt.manifest import merge_manifests, read_manifest

    parser = merge_parser()
    args = parser.parse_args(argv)
    if len(args.manifests) < 2:
        parser.error("give at least two manifests to merge.")
    try:
        merged = merge_manifests([read_manifest(p) for p in args.manifests], [str(p) for p in args.manifests])
        validate_manifest(merged, check_files=False, required_splits=(), allow_speaker_overlap=args.allow_speaker_overlap)
        write_manifest(args.out, merged)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    corpora = sorted({u.corpus for u in merged})
    print(f"Wrote {len(merged)} utterances of {len(corpora)} corpora ({', '.join(corpora)}) to {args.out}")
    print(merged.summary())
    return 0


SUBCOMMANDS = {"table": table_cli, "merge": merge_cli}


if __name__ == "__main__":
    sys.exit(cli())
