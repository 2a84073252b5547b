"""Export a MemoCMT model to an ONNX bundle that `memocmt.runtime` serves without PyTorch.

    from memocmt.onnx.export import export_checkpoint
    export_checkpoint("model.safetensors", "memocmt-onnx", precision="int8")

The command line is `memocmt-export` (memocmt.onnx.cli).

Three graphs (only those the model's modalities need): the audio encoder (features +
lengths -> stacked states + lengths), the text encoder (ids + mask -> stacked states) and
the fusion head (both -> logits, probabilities). Every export is written to a temporary
folder, verified against PyTorch (`memocmt.onnx.verify`) and only then moved into place,
so a failed check leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..audio import SAMPLE_RATE
from ..bundle_format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    GRAPH_FILES,
    IR_VERSION_FOR_OPSET,
    MANIFEST_NAME,
    SPEAKER_PRIOR_FILE,
    TOKENIZER_FILE,
    VOICES_FILE,
    ExportError,
    ExportValidationError,
    graph_interface,
    sha256_file,
)
from ..encoders import HFAudioEncoder
from ..fusion import utterance_stats
from ..language_policy import has_audio_fallback
from ..model import MemoCMT, load_checkpoint
from .transforms import calibration_feeds, convert_fp16, logit_shift_scorer, optimize_graph, quantize_int8

logger = logging.getLogger("memocmt")

PRECISIONS = ("fp32", "fp16", "int8")
OPSETS = (17, 18, 19, 20)
DEFAULT_OPSET = 17  # loads on every onnxruntime from 1.14 on, including the GPU images' 1.30
EXAMPLE_AUDIO_S = 3.0  # length of the tracing input; every length works afterwards
EXAMPLE_TOKENS = 9
INT8_SCHEME = ("dynamic, int8 weights per output channel, uint8 activations per tensor; weight MatMuls only; "
               "with calibration data the most sensitive stay fp32 until the logit change is within budget")


# ---------------------------------------------------------------------- graph wrappers
# The legacy (TorchScript) exporter needs modules with explicit tensor inputs; these also
# fix the graph interfaces that the runtime relies on.


class _AudioGraph(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        states, out_lengths = self.encoder(features, lengths)
        return states, out_lengths.to(torch.int64)


class _TextGraph(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.encoder(input_ids, attention_mask)


class _FusionGraph(nn.Module):
    def __init__(self, head: nn.Module, modalities: str, audio_fallback: bool = False):
        super().__init__()
        self.head = head
        self.audio_fallback = audio_fallback  # also output the audio-only members' logits (EnsembleHead.audio_logits)
        self.input_names = graph_interface("fusion", modalities, head.speaker_norm)[0]

    def forward(self, *inputs: torch.Tensor):
        named = dict(zip(self.input_names, inputs))
        logits = self.head(*(named.get(n) for n in ("audio_states", "audio_lengths", "text_states", "text_lengths",
                                                     "speaker_stats")))
        if self.audio_fallback:
            audio = self.head.audio_logits(named["audio_states"], named["audio_lengths"], named.get("speaker_stats"))
            return logits, torch.softmax(logits, dim=-1), audio
        return logits, torch.softmax(logits, dim=-1)


@dataclass
class GraphSpec:
    """One graph to export: module, tracing inputs and its ONNX interface."""

    stage: str  # "audio" | "text" | "fusion"
    module: nn.Module
    args: tuple
    dynamic_axes: dict[str, dict[int, str]]
    modalities: str = "both"
    speaker_norm: str = ""
    audio_fallback: bool = False  # fusion graph: also `audio_logits` (memocmt.language_policy)

    @property
    def input_names(self) -> list[str]:
        return graph_interface(self.stage, self.modalities, self.speaker_norm)[0]

    @property
    def output_names(self) -> list[str]:
        return graph_interface(self.stage, self.modalities, self.speaker_norm, self.audio_fallback)[1]


def _example_audio(model: MemoCMT) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Tracing input for the audio graph, and whether the graph may take padded batches."""
    enc = model.audio_encoder
    batchable = not isinstance(enc, HFAudioEncoder) or enc.supports_padding
    n = int(EXAMPLE_AUDIO_S * SAMPLE_RATE)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([n, n * 2 // 3] if batchable else [n], dtype=torch.long)
    if enc.feature_spec.kind == "log_mel":
        frames = n // enc.feature_spec.hop_length
        features = torch.randn(len(lengths), enc.feature_spec.n_mels, frames, generator=gen) * 0.3
        lengths = lengths // enc.feature_spec.hop_length
    else:
        features = torch.randn(len(lengths), n, generator=gen) * 0.1
    return features, lengths, batchable


def graph_specs(model: MemoCMT) -> list[GraphSpec]:
    """The graphs this model's modalities need, with tracing inputs taken from the model itself."""
    model.eval()
    specs = []
    audio_states = audio_lengths = text_states = text_lengths = None
    with torch.inference_mode():
        if model.audio_encoder is not None:
            features, lengths, _ = _example_audio(model)
            feature_axes = {0: "batch", 2: "mel_frames"} if features.dim() == 3 else {0: "batch", 1: "samples"}
            specs.append(GraphSpec(
                "audio", _AudioGraph(model.audio_encoder), (features, lengths),
                {"features": feature_axes, "lengths": {0: "batch"},
                 "states": {0: "batch", 2: "audio_frames"}, "out_lengths": {0: "batch"}},
            ))
            audio_states, audio_lengths = model.audio_encoder(features, lengths)
        if model.text_encoder is not None:
            ids, mask = model.text_encoder.tokenize(["a short example", "a longer example sentence for tracing"],
                                                    EXAMPLE_TOKENS)
            specs.append(GraphSpec(
                "text", _TextGraph(model.text_encoder), (ids, mask),
                {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                 "states": {0: "batch", 2: "tokens"}},
            ))
            text_states, text_lengths = model.text_encoder(ids, mask), mask.sum(dim=1)
    batch = audio_states.shape[0] if audio_states is not None else text_states.shape[0]
    args, axes = [], {}
    if audio_states is not None:
        args += [audio_states[:batch], audio_lengths[:batch]]
        axes.update(audio_states={0: "batch", 2: "audio_frames"}, audio_lengths={0: "batch"})
    if text_states is not None:
        args += [text_states[:batch], text_lengths[:batch]]
        axes.update(text_states={0: "batch", 2: "tokens"}, text_lengths={0: "batch"})
    speaker_norm = model.head.speaker_norm
    if speaker_norm:  # statistics of a plausible scale: the batch's own
        args.append(utterance_stats(audio_states[:batch], audio_lengths[:batch]))
        axes.update(speaker_stats={0: "batch"})
    axes.update(logits={0: "batch"}, probabilities={0: "batch"})
    modalities = model.config.modalities
    fallback = has_audio_fallback(model.config)
    if fallback:
        axes.update(audio_logits={0: "batch"})
    specs.append(GraphSpec("fusion", _FusionGraph(model.head, modalities, fallback), tuple(args), axes, modalities,
                           speaker_norm, fallback))
    return specs


def export_graph(spec: GraphSpec, path: Path, opset: int) -> Path:
    """Trace one graph to ONNX (legacy exporter: opset and IR stay loadable by older runtimes)."""
    # The exporter puts the module back in the mode it found it in, recursively: a wrapper left
    # in nn.Module's default training mode would switch the caller's model to training (dropout on).
    spec.module.eval()
    try:
        # The tracer warns about every shape assertion it folds; verification below is the real check.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            torch.onnx.export(
                spec.module, spec.args, str(path), dynamo=False, opset_version=opset,
                input_names=spec.input_names, output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes, do_constant_folding=True,
            )
    except Exception as e:  # the exporter raises many unrelated types for unsupported code
        raise ExportError(f"Cannot export the {spec.stage} graph to ONNX opset {opset}: {e}") from e
    pin_ir_version(path, opset)
    return path


def pin_ir_version(path: Path, opset: int) -> None:
    """Store the oldest IR version the opset allows, so older onnxruntime builds load the graph."""
    import onnx

    model = onnx.load(str(path))
    model.ir_version = IR_VERSION_FOR_OPSET[opset]
    model.producer_name, model.producer_version = "memocmt", __version__
    onnx.save(model, str(path))


# ---------------------------------------------------------------------- bundle


def _io_description(path: Path) -> dict:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values):
        return [{
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
            "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
        } for v in values]

    return {"file": path.name, "inputs": describe(graph.input), "outputs": describe(graph.output)}


def _manifest(model: MemoCMT, staging: Path, precision: str, optimize: bool, opset: int, source: dict) -> dict:
    import onnx
    import transformers

    from ..providers import ort_version

    cfg = model.config
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "memocmt_version": __version__,
        "labels": list(cfg.labels),
        "modalities": cfg.modalities,
        "trained": source.get("sha256") is not None,
        "source": source,
        "config": cfg.to_dict(),
        "precision": precision,
        "optimized": optimize,
        "opset": opset,
        "ir_version": IR_VERSION_FOR_OPSET[opset],
        "sample_rate": SAMPLE_RATE,
        "exporter": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort_version()},
        "graphs": {stage: _io_description(staging / name) for stage, name in GRAPH_FILES.items()
                   if (staging / name).is_file()},
    }
    if model.audio_encoder is not None:
        enc = model.audio_encoder
        max_frames = getattr(enc, "max_input_frames", None)
        manifest["audio"] = {
            "encoder": enc.name,
            "feature_spec": enc.feature_spec.to_dict(),
            "batchable": _example_audio(model)[2],
            "frame_rate_hz": enc.frame_rate_hz,
            "max_samples": max_frames * enc.feature_spec.hop_length if max_frames else None,
        }
    if model.voices is not None:
        manifest["voices"] = {"file": VOICES_FILE, "dims": int(model.voices.matrix.shape[1]),
                              "threshold": float(model.voices.threshold)}
    if model.text_encoder is not None:
        tok = model.text_encoder.tokenizer
        manifest["text"] = {"encoder": model.text_encoder.name, "tokenizer": TOKENIZER_FILE,
                            "max_tokens": cfg.max_text_tokens, "pad_id": tok.pad_token_id, "pad_token": tok.pad_token}
    return manifest


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in the bundle folder except the manifest that records them."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass
class ExportResult:
    path: Path  # the verified bundle folder
    manifest: dict  # what its manifest.json holds, parity figures included


def export_bundle(
    model: MemoCMT,
    out: str | Path,
    *,
    precision: str = "fp32",
    optimize: bool = False,
    opset: int = DEFAULT_OPSET,
    source: dict | None = None,
    verify_audio: str | Path | None = None,
    eval_manifest: str | Path | None = None,
    eval_limit: int | None = None,
    int8_graphs: tuple[str, ...] | None = None,
) -> ExportResult:
    """Export, verify against PyTorch, and only then move the bundle to `out`.

    With int8, `int8_graphs` names the graphs to quantize ("audio", "text", "fusion"; None:
    all); the others stay fp32, e.g. to keep an encoder whose int8 error moves predictions.
    With int8 and an `eval_manifest`, calibration uses its val/train utterances and, within
    each graph, the weight MatMuls whose quantization moves the calibration logits most stay
    fp32 until the change is within budget (`quantize_int8`); the manifest lists them.

    `source` describes where the weights came from ({"checkpoint": name, "sha256": ...} for a
    trained checkpoint); without a SHA-256 the manifest marks the bundle as untrained.
    Raises ExportValidationError (leaving `out` untouched) when any check fails.
    """
    from .verify import verify_bundle

    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if opset not in IR_VERSION_FOR_OPSET:
        raise ValueError(f"Unsupported opset {opset}; choose one of {', '.join(map(str, OPSETS))}.")
    stages = [name for name, present in (("audio", model.audio_encoder), ("text", model.text_encoder), ("fusion", True))
              if present is not None]
    if int8_graphs is not None and (precision != "int8" or not set(int8_graphs) <= set(stages) or not int8_graphs):
        raise ValueError(f"int8_graphs must name some of this model's graphs ({', '.join(stages)}) with int8 precision, "
                         f"not {', '.join(int8_graphs) or 'none'}.")
    out = Path(out)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        model = model.eval().cpu()
        calibration, feeds, quantized = None, None, {}
        if precision == "int8" and eval_manifest is not None:
            # Calibration needs real data of the model's domain: without it every weight MatMul is quantized.
            from .verify import calibration_set

            calibration = calibration_set(verify_audio, eval_manifest)
            feeds = calibration_feeds(model, calibration.items)
        for spec in graph_specs(model):
            path = export_graph(spec, staging / GRAPH_FILES[spec.stage], opset)
            if optimize:
                optimize_graph(path)
            if precision == "int8" and (int8_graphs is None or spec.stage in int8_graphs):
                score = logit_shift_scorer(model, feeds, spec.stage) if feeds else None
                quantized[spec.stage] = quantize_int8(path, optimize, score=score)
            elif precision == "fp16":
                convert_fp16(path)
            if optimize or precision != "fp32":
                pin_ir_version(path, opset)
        if model.text_encoder is not None:
            _save_tokenizer(model, staging)
        if model.head.speaker_norm:
            np.save(staging / SPEAKER_PRIOR_FILE, model.head.speaker_prior.detach().cpu().float().numpy())
        if model.voices is not None:
            np.savez(staging / VOICES_FILE, center=model.voices.center, matrix=model.voices.matrix,
                     threshold=np.float64(model.voices.threshold))
        manifest = _manifest(model, staging, precision, optimize, opset, source or {})
        if precision == "int8":
            manifest["int8"] = {
                "scheme": INT8_SCHEME,
                "calibration": calibration.describe() if calibration else None,
                "graphs": quantized,
                "fp32_graphs": [stage for stage in stages if stage not in quantized],
            }
        manifest["files"] = file_hashes(staging)
        write_manifest(staging, manifest)
        manifest["parity"] = verify_bundle(model, staging, precision, verify_audio, eval_manifest, eval_limit)
        write_manifest(staging, manifest)
        _move_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("Wrote verified %s bundle to %s", precision, out)
    return ExportResult(out, manifest)


def _save_tokenizer(model: MemoCMT, staging: Path) -> None:
    model.text_encoder.tokenizer.save_pretrained(str(staging))
    if not (staging / TOKENIZER_FILE).is_file():
        raise ExportError(f"The text encoder's tokenizer did not write {TOKENIZER_FILE}; the runtime needs a fast tokenizer.")


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file())):
        raise ExportError(f"{out} exists and is not a bundle folder; choose another --out or remove it.")


def _move_into_place(staging: Path, out: Path) -> None:
    """Replace `out` with the verified staging folder (an old bundle is removed only afterwards)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old)


def export_checkpoint(checkpoint: str | Path, out: str | Path, **kwargs) -> ExportResult:
    """Export a trained safetensors checkpoint (see export_bundle for the options)."""
    checkpoint = Path(checkpoint)
    model = load_checkpoint(checkpoint)
    source = {"checkpoint": checkpoint.name, "sha256": sha256_file(checkpoint)}
    return export_bundle(model, out, source=source, **kwargs)
