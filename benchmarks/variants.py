"""The model variants a benchmark compares, their ONNX bundles, and one staged call per variant.

Every variant runs the same four stages on the same inputs: `features` (log-mel or waveform
checks, tokenization), `audio_encoder`, `text_encoder` and `fusion`; `Runner.run_stages`
returns the logits and the wall time of each stage in milliseconds.

* edge: the trained checkpoint (shipped model by default) in PyTorch eager, the reference
  point every speed-up is a ratio to, and its ONNX bundles (fp32, int8; fp16/CUDA with a GPU);
* paper: HuBERT-base + BERT-base built from default transformers configs with RANDOM weights
  (no hub access), so only its speed means anything; accuracy is reported as n/a.

Bundles are exported with `memocmt.onnx.export` into a cache folder outside the repository
and reused while the source (checkpoint SHA-256, or the paper stand-in's key) is unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger("memocmt")

REFERENCE = "edge-torch"
PAPER_SEED = 0
PAPER_KEY = f"random-seed{PAPER_SEED}-v1"  # bump when the paper stand-in changes


@dataclass(frozen=True)
class VariantSpec:
    name: str
    preset: str  # "edge" | "paper"
    backend: str  # "torch" | "onnxruntime"
    precision: str  # "fp32" | "int8" | "fp16"
    device: str  # "cpu" | "cuda"

    @property
    def trained(self) -> bool:
        return self.preset == "edge"

    def to_dict(self) -> dict:
        return {**asdict(self), "trained": self.trained}


VARIANTS: dict[str, VariantSpec] = {v.name: v for v in (
    VariantSpec("edge-torch", "edge", "torch", "fp32", "cpu"),
    VariantSpec("edge-ort-fp32", "edge", "onnxruntime", "fp32", "cpu"),
    VariantSpec("edge-ort-int8", "edge", "onnxruntime", "int8", "cpu"),
    VariantSpec("edge-ort-fp32-cuda", "edge", "onnxruntime", "fp32", "cuda"),
    VariantSpec("edge-ort-fp16-cuda", "edge", "onnxruntime", "fp16", "cuda"),
    VariantSpec("paper-torch", "paper", "torch", "fp32", "cpu"),
    VariantSpec("paper-ort-fp32", "paper", "onnxruntime", "fp32", "cpu"),
    VariantSpec("paper-ort-int8", "paper", "onnxruntime", "int8", "cpu"),
)}


@dataclass
class Sources:
    """Where models come from and how they run."""

    checkpoint: Path | None  # the trained edge checkpoint
    cache_dir: Path  # bundles and the paper stand-in encoders live here
    threads: int  # CPU threads for PyTorch and ONNX Runtime alike
    # Real speech for the edge int8 export, as `export/to_onnx.py --eval-manifest` uses it:
    # calibration on its val/train utterances, agreement on its test split.
    calibration: Path | None = None

    def to_dict(self) -> dict:
        return {"checkpoint": str(self.checkpoint) if self.checkpoint else None, "cache_dir": str(self.cache_dir),
                "threads": self.threads, "calibration": str(self.calibration) if self.calibration else None}


def cuda_available() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    from benchmarks.machine import gpus

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and bool(gpus())


def unavailable_reason(spec: VariantSpec, sources: Sources) -> str | None:
    """Why a variant cannot be measured here, or None."""
    if spec.device == "cuda" and not cuda_available():
        return "not measured: no GPU with a CUDA execution provider on this machine"
    if spec.preset == "edge" and sources.checkpoint is None:
        return "not measured: no trained checkpoint (pass --checkpoint)"
    return None


# ---------------------------------------------------------------------- sources


def source_record(spec: VariantSpec, sources: Sources) -> dict:
    """What a bundle's manifest must record as its source for the bundle to be reused."""
    from memocmt.runtime import sha256_file

    if spec.preset == "edge":
        return {"checkpoint": sources.checkpoint.name, "sha256": sha256_file(sources.checkpoint)}
    return {"preset": "paper", "weights": PAPER_KEY}


def paper_encoder_dirs(cache_dir: Path) -> tuple[Path, Path]:
    """HuBERT-base and BERT-base with default configs and random weights, saved like hub models.

    BERT-base uses the uncased 30522-token WordPiece vocabulary, which the shipped MiniLM-L6
    text encoder also uses, so its tokenizer is borrowed and token counts are realistic.
    """
    root = cache_dir / "paper-encoders" / PAPER_KEY
    hubert, bert = root / "hubert-base", root / "bert-base"
    if not (hubert / "config.json").is_file() or not (bert / "config.json").is_file():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel, HubertConfig, HubertModel

        from memocmt.encoders import BUILTIN_TEXT_ENCODERS, builtin_path

        logger.info("Building random-weight HuBERT-base and BERT-base stand-ins in %s", root)
        torch.manual_seed(PAPER_SEED)
        HubertModel(HubertConfig()).save_pretrained(hubert)
        tokenizer = AutoTokenizer.from_pretrained(str(builtin_path(BUILTIN_TEXT_ENCODERS["minilm-l6"])))
        assert tokenizer.vocab_size == BertConfig().vocab_size, "MiniLM's vocabulary is not BERT-base's"
        tokenizer.save_pretrained(bert)
        BertModel(BertConfig()).save_pretrained(bert)
    return hubert, bert


class ModelCache:
    """One PyTorch model per preset, built on first use (exports and the eager variant share it)."""

    def __init__(self, sources: Sources):
        self.sources = sources
        self._models: dict = {}

    def get(self, preset: str):
        if preset not in self._models:
            self._models[preset] = build_torch_model(preset, self.sources)
        return self._models[preset]


def build_torch_model(preset: str, sources: Sources):
    import torch

    from memocmt.config import preset as preset_config
    from memocmt.model import MemoCMT, load_checkpoint

    if preset == "edge":
        return load_checkpoint(sources.checkpoint).eval()
    hubert, bert = paper_encoder_dirs(sources.cache_dir)
    torch.manual_seed(PAPER_SEED)
    return MemoCMT(preset_config("paper", audio_encoder=str(hubert), text_encoder=str(bert))).eval()


EXPORT_CODE = ("model.py", "fusion.py", "encoders.py", "whisper_encoder.py", "bundle_format.py", "onnx/export.py",
               "onnx/transforms.py")


def export_code_key() -> str:
    """Hash of the library code that shapes the exported graphs: a cached bundle from older code is stale."""
    import hashlib

    import memocmt

    root = Path(memocmt.__file__).parent
    h = hashlib.sha256()
    for name in EXPORT_CODE:
        h.update((root / name).read_bytes())
    return h.hexdigest()[:8]


def bundle_dir(spec: VariantSpec, sources: Sources) -> Path:
    record = source_record(spec, sources)
    key = record.get("sha256", PAPER_KEY)[:12]
    return sources.cache_dir / "bundles" / f"{spec.preset}-{key}-{export_code_key()}-{spec.precision}"


def ensure_bundle(spec: VariantSpec, sources: Sources, models: ModelCache) -> Path:
    """The variant's bundle folder, exported (and verified) only when missing or stale.

    The edge int8 bundle is calibrated and checked on `sources.calibration` when there is one,
    so the benchmark measures what the documented export command writes.
    """
    from memocmt.onnx.export import export_bundle
    from memocmt.runtime import MANIFEST_NAME

    out = bundle_dir(spec, sources)  # its name carries the checkpoint and the export code's hash
    record = source_record(spec, sources)
    eval_manifest = sources.calibration if spec.preset == "edge" and spec.precision == "int8" else None
    manifest = out / MANIFEST_NAME
    if manifest.is_file():
        stored = json.loads(manifest.read_text())
        calibration = ((stored.get("int8") or {}).get("calibration") or {}).get("source", "")
        calibrated = calibration.startswith(eval_manifest.name) if eval_manifest else not calibration
        if stored.get("source") == record and stored.get("precision") == spec.precision and calibrated:
            return out
    logger.info("Exporting %s bundle to %s", spec.name, out)
    export_bundle(models.get(spec.preset), out, precision=spec.precision, source=record, eval_manifest=eval_manifest)
    return out


def folder_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def torch_disk_mb(model, checkpoint: Path | None) -> float:
    """Checkpoint plus the encoder weight folders the eager model loads."""
    from memocmt.encoders import BUILTIN_AUDIO_ENCODERS, BUILTIN_TEXT_ENCODERS, builtin_path

    total = folder_mb(checkpoint) if checkpoint else 0.0
    for name, builtins in ((model.config.audio_encoder, BUILTIN_AUDIO_ENCODERS), (model.config.text_encoder, BUILTIN_TEXT_ENCODERS)):
        path = builtin_path(builtins[name]) if name in builtins else Path(name)
        if path.is_dir():
            total += folder_mb(path)
    return total


# ---------------------------------------------------------------------- runners


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class TorchRunner:
    """PyTorch eager, stage by stage (the reference point)."""

    def __init__(self, spec: VariantSpec, model):
        self.spec, self.model, self.labels = spec, model, list(model.labels)
        self.speaker_norm, self.speaker_prior = model.speaker_norm, model.speaker_prior

    def run_stages(self, audios: list[np.ndarray], texts: list[str]) -> tuple[np.ndarray, dict[str, float]]:
        import torch

        m, t = self.model, {}
        with torch.inference_mode():
            start = time.perf_counter()
            batch = m.prepare(audios if m.audio_encoder is not None else None, texts if m.text_encoder is not None else None)
            t["features"] = _ms(start)
            start = time.perf_counter()
            audio = m.encode_audio(batch.audio_features, batch.audio_lengths) if m.audio_encoder is not None else (None, None)
            t["audio_encoder"] = _ms(start)
            start = time.perf_counter()
            text = m.encode_text(batch.input_ids, batch.text_mask) if m.text_encoder is not None else (None, None)
            t["text_encoder"] = _ms(start)
            start = time.perf_counter()
            logits = m.head(*audio, *text)
            t["fusion"] = _ms(start)
        return logits.float().numpy(), t

    def audio_stats(self, audios):
        return self.model.audio_stats(audios)

    def encode(self, audios, texts):
        return self.model.encode(audios, texts)

    def classify_batch(self, audio, text, speaker_stats=None):
        return self.model.classify_batch(audio, text, speaker_stats)

    def predict_batch(self, audios, texts, speaker_stats=None):
        return self.model.predict_batch(audios, texts, speaker_stats)


class OrtRunner:
    """An exported bundle on ONNX Runtime, through the same calls the live pipeline makes."""

    def __init__(self, spec: VariantSpec, bundle):
        self.spec, self.bundle, self.labels = spec, bundle, list(bundle.labels)
        self.speaker_norm, self.speaker_prior = bundle.speaker_norm, bundle.speaker_prior

    def run_stages(self, audios: list[np.ndarray], texts: list[str]) -> tuple[np.ndarray, dict[str, float]]:
        b, t = self.bundle, {"features": 0.0, "audio_encoder": 0.0}
        audio = b.encode_audio_batch(audios) if b.uses_audio else None
        if audio is not None:
            t.update(features=audio.timings_ms["features"], audio_encoder=audio.timings_ms["audio_encoder"])
        start = time.perf_counter()
        text = b.encode_text_batch(texts) if b.uses_text else None
        t["text_encoder"] = _ms(start)
        start = time.perf_counter()
        logits = b.logits(audio, text)
        t["fusion"] = _ms(start)
        return logits, t

    def audio_stats(self, audios):
        return self.bundle.audio_stats(audios)

    def encode(self, audios, texts):
        return self.bundle.encode(audios, texts)

    def classify_batch(self, audio, text, speaker_stats=None):
        return self.bundle.classify_batch(audio, text, speaker_stats)

    def predict_batch(self, audios, texts, speaker_stats=None):
        return self.bundle.predict_batch(audios, texts, speaker_stats)


def open_runner(spec: VariantSpec, sources: Sources, models: ModelCache, *, warm_up: bool = False):
    """A loaded runner and its size on disk in MB."""
    if spec.backend == "torch":
        import torch

        torch.set_num_threads(sources.threads)
        model = models.get(spec.preset)
        runner = TorchRunner(spec, model)
        disk = torch_disk_mb(model, sources.checkpoint if spec.preset == "edge" else None)
    else:
        from memocmt.runtime import load_bundle

        path = ensure_bundle(spec, sources, models)
        runner = OrtRunner(spec, load_bundle(path, spec.device, sources.threads, warm_up=False))
        disk = folder_mb(path)
    if warm_up:
        warm_up_runner(runner)
    return runner, disk


def warm_up_runner(runner, seconds: float = 1.0) -> float:
    """Two calls on generated input (first-call allocations, lazy initialisation); returns ms of the first."""
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    start = time.perf_counter()
    runner.run_stages([audio], ["warm up the model"])
    first = _ms(start)
    runner.run_stages([audio], ["warm up the model"])
    return first
