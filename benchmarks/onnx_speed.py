"""PyTorch eager vs ONNX Runtime fp32 vs int8 latency, batch 1, on one 3 s utterance and a 12-word transcript.

    python benchmarks/onnx_speed.py [--rounds 20] [--skip-paper | --only paper] [--cache-dir DIR] [--json results.json]

* paper preset: random-init HuBERT-base + BERT-base built from their default configs (no weights
  needed: latency does not depend on the values), whole predictions compared;
* edge preset: the real Whisper tiny.en encoder + MiniLM-L6, per stage;
* bundle load + warm-up time.
Variants run interleaved (one call of each per round) after warm-up, and medians are reported,
so load from other processes affects all variants alike. Prints JSON with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TEXT = "I really cannot believe you did that to me again after everything"  # 12 words
UTTERANCE_S = 3.0


def machine_info(threads: int | None) -> dict:
    import onnxruntime
    import torch
    import transformers

    from memocmt.providers import default_threads, physical_cores

    from benchmarks.machine import cpu_flags, cpu_model

    return {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "ort_threads": threads or default_threads(),
        "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
    }


def utterance() -> tuple[np.ndarray, str]:
    """A real 3 s utterance when the RAVDESS sample is beside the checkout, else a generated one."""
    from memocmt.audio import SAMPLE_RATE, load_audio
    from memocmt.onnx.cli import _default_verify_audio
    from memocmt.onnx.verify import _generated

    n = int(UTTERANCE_S * SAMPLE_RATE)
    folder = _default_verify_audio()
    if folder is not None:
        audio = load_audio(sorted(folder.rglob("*.flac"))[0])
        return np.resize(audio, n).astype(np.float32), TEXT
    return _generated(UTTERANCE_S, 1), TEXT


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples), 2)


def interleaved(variants: dict, rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    """Call every variant once per round; each returns {stage: ms}. Medians per variant and stage."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for stage, ms in fn().items():
                samples[name].setdefault(stage, []).append(ms)
    return {name: {stage: median_ms(v) for stage, v in stages.items()} for name, stages in samples.items()}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def torch_stages(model, audio: np.ndarray, text: str):
    """PyTorch eager timings per stage, measured the same way the runtime reports them."""
    import torch

    from memocmt.audio import check_audio
    from memocmt.features import extract_features, pad_batch

    spec = model.audio_encoder.feature_spec

    def run() -> dict[str, float]:
        with torch.inference_mode():
            t0 = time.perf_counter()
            feats, lengths = pad_batch([extract_features(check_audio(audio), spec)])
            feats, lengths = torch.from_numpy(feats), torch.from_numpy(lengths)
            t1 = time.perf_counter()
            a = model.encode_audio(feats, lengths)
            t2 = time.perf_counter()
            ids, mask = model.text_encoder.tokenize([text], model.config.max_text_tokens)
            t = model.encode_text(ids, mask)
            t3 = time.perf_counter()
            model.head(a[0], a[1], t[0], t[1]).softmax(-1).numpy()
            t4 = time.perf_counter()
        ms = {"features": t1 - t0, "audio_encoder": t2 - t1, "text_encoder": t3 - t2, "fusion": t4 - t3,
              "total": t4 - t0}
        return {k: v * 1000 for k, v in ms.items()}

    return run


def ort_stages(bundle, audio: np.ndarray, text: str):
    return lambda: bundle.predict(audio, text).timings_ms


def reusable(folder: Path, precision: str) -> bool:
    """A bundle exported earlier into --cache-dir with this precision; the folder name carries the
    exporter-code key, so a bundle from older export code is never reused."""
    from memocmt.runtime import MANIFEST_NAME

    manifest = folder / MANIFEST_NAME
    return manifest.is_file() and json.loads(manifest.read_text()).get("precision") == precision


def export_pair(model, root: Path, name: str) -> dict[str, Path]:
    from benchmarks.variants import export_code_key
    from memocmt.onnx.cli import _default_verify_audio
    from memocmt.onnx.export import export_bundle

    paths = {}
    for precision in ("fp32", "int8"):
        folder = root / f"{name}-{export_code_key()}-{precision}"
        if reusable(folder, precision):
            paths[precision] = folder
            print(f"reusing {paths[precision]}", file=sys.stderr)
            continue
        start = time.perf_counter()
        result = export_bundle(model, folder, precision=precision,
                               verify_audio=_default_verify_audio())
        print(f"exported {name} {precision} in {time.perf_counter() - start:.0f} s; parity "
              f"{json.dumps(result.manifest['parity'])}", file=sys.stderr)
        paths[precision] = result.path
    return paths


def load_times(paths: dict[str, Path], threads: int | None, repeats: int = 3) -> dict[str, dict[str, float]]:
    from memocmt.runtime import load_bundle

    out = {}
    for precision, path in paths.items():
        loads = [load_bundle(path, providers="cpu", threads=threads) for _ in range(repeats)]
        out[precision] = {"load_ms": median_ms([b.load_ms for b in loads]),
                          "warmup_ms": median_ms([b.warmup_ms for b in loads]),
                          "onnx_mb": round(sum(p.stat().st_size for p in path.glob("*.onnx")) / 1e6, 1)}
    return out


def bench_model(model, name: str, root: Path, rounds: int, warmup: int, audio, text, threads: int | None) -> dict:
    from memocmt.runtime import load_bundle

    paths = export_pair(model, root, name)
    bundles = {p: load_bundle(path, providers="cpu", threads=threads) for p, path in paths.items()}
    variants = {"pytorch": torch_stages(model, audio, text)}
    variants.update({f"ort_{p}": ort_stages(b, audio, text) for p, b in bundles.items()})
    result = {"stages_ms": interleaved(variants, rounds, warmup), "bundle": load_times(paths, threads)}
    fp32 = bundles["fp32"].predict(audio, text)
    int8 = bundles["int8"].predict(audio, text)
    result["int8_vs_fp32_max_prob_diff"] = round(
        max(abs(fp32.probabilities[k] - int8.probabilities[k]) for k in fp32.probabilities), 4)
    return result


def paper_model(root: Path):
    """The paper preset with random-init base-size encoders built from default configs."""
    import torch
    from transformers import BertConfig, BertModel, HubertConfig, HubertModel

    from memocmt.config import preset
    from memocmt.encoders import BUILTIN_TEXT_ENCODERS, builtin_path
    from memocmt.model import MemoCMT

    torch.manual_seed(0)
    hubert, bert = root / "hubert-base-random", root / "bert-base-random"
    HubertModel(HubertConfig()).save_pretrained(hubert)
    BertModel(BertConfig()).save_pretrained(bert)
    tokenizer_dir = builtin_path(BUILTIN_TEXT_ENCODERS["minilm-l6"])  # the bert-base-uncased vocabulary
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / name, bert / name)
    return MemoCMT(preset("paper", audio_encoder=str(hubert), text_encoder=str(bert))).eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--skip-paper", action="store_true", help="only the edge preset (no base-size models)")
    parser.add_argument("--only", choices=("edge", "paper"), help="measure one preset only")
    parser.add_argument("--cache-dir", type=Path, help="keep the exported bundles here and reuse them on later runs "
                        "(only while the export code is unchanged); default: a temporary folder")
    parser.add_argument("--threads", type=int, help="CPU threads for both PyTorch and ONNX Runtime "
                        "(default: PyTorch's default and the runtime's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from memocmt.model import MemoCMT

    audio, text = utterance()
    report = {"machine": machine_info(args.threads), "utterance_s": UTTERANCE_S, "text_words": len(text.split()),
              "rounds": args.rounds, "batch": 1, "threads_requested": args.threads}
    with tempfile.TemporaryDirectory(prefix="memocmt-bench-") as tmp:
        root = args.cache_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.only != "paper":
            report["edge"] = bench_model(MemoCMT.from_preset("edge").eval(), "edge", root, args.rounds, args.warmup,
                                         audio, text, args.threads)
        if not args.skip_paper and args.only != "edge":
            report["paper"] = bench_model(paper_model(root), "paper", root, args.rounds, args.warmup, audio, text,
                                          args.threads)
        report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    main()
