"""Export a MemoCMT model to an ONNX bundle that `memocmt.runtime` serves without PyTorch.

    memocmt-export --checkpoint model.safetensors --out memocmt-onnx --precision int8

Three graphs (only those the model's modalities need): the audio encoder (features +
lengths -> stacked states + lengths), the text encoder (ids + mask -> stacked states) and
the fusion head (both -> logits, probabilities). Every export is written to a temporary
folder, verified against PyTorch (`memocmt.onnx_verify`) and only then moved into place,
so a failed check leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .audio import SAMPLE_RATE
from .encoders import EncoderLoadError, HFAudioEncoder
from .model import CheckpointError, MemoCMT, load_checkpoint
from .runtime import BUNDLE_FORMAT, BUNDLE_VERSION, GRAPH_FILES, MANIFEST_NAME, TOKENIZER_FILE, graph_interface, sha256_file

logger = logging.getLogger("memocmt")

PRECISIONS = ("fp32", "fp16", "int8")
OPSETS = (17, 18, 19, 20)
DEFAULT_OPSET = 17  # loads on every onnxruntime from 1.14 on, including the GPU images' 1.30
IR_VERSION_FOR_OPSET = {17: 8, 18: 8, 19: 9, 20: 9}  # the oldest IR each opset allows
EXAMPLE_AUDIO_S = 3.0  # length of the tracing input; every length works afterwards
EXAMPLE_TOKENS = 9
INT8_SCHEME = "dynamic, int8 weights per output channel, uint8 activations per tensor; weight MatMuls only"


class ExportError(RuntimeError):
    """The model cannot be exported as asked."""


class ExportValidationError(ExportError):
    """An exported graph failed verification against PyTorch; no bundle was written."""


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
    def __init__(self, head: nn.Module, modalities: str):
        super().__init__()
        self.head = head
        self.modalities = modalities

    def forward(self, *inputs: torch.Tensor):
        if self.modalities == "both":
            logits = self.head(*inputs)
        elif self.modalities == "audio":
            logits = self.head(inputs[0], inputs[1], None, None)
        else:
            logits = self.head(None, None, inputs[0], inputs[1])
        return logits, torch.softmax(logits, dim=-1)


@dataclass
class GraphSpec:
    """One graph to export: module, tracing inputs and its ONNX interface."""

    stage: str  # "audio" | "text" | "fusion"
    module: nn.Module
    args: tuple
    dynamic_axes: dict[str, dict[int, str]]
    modalities: str = "both"

    @property
    def input_names(self) -> list[str]:
        return graph_interface(self.stage, self.modalities)[0]

    @property
    def output_names(self) -> list[str]:
        return graph_interface(self.stage, self.modalities)[1]


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
    axes.update(logits={0: "batch"}, probabilities={0: "batch"})
    modalities = model.config.modalities
    specs.append(GraphSpec("fusion", _FusionGraph(model.head, modalities), tuple(args), axes, modalities))
    return specs


def export_graph(spec: GraphSpec, path: Path, opset: int) -> Path:
    """Trace one graph to ONNX (legacy exporter: opset and IR stay loadable by older runtimes)."""
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


# ---------------------------------------------------------------------- transforms


def optimize_graph(path: Path) -> None:
    """ONNX Runtime's provider-independent fusions (attention, LayerNorm, GELU), saved offline."""
    from .providers import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    out = path.with_suffix(".opt.onnx")
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    out.replace(path)


def weight_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes whose second input is a stored weight (not an activation)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    weights |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


SMOOTH_ALPHA = 0.5  # SmoothQuant's migration strength: half of each channel's range moves into the weights
SMOOTH_MIN_GAIN = 0.25  # keep smoothing only where it cuts the worst calibration error by at least this much


def calibration_feeds(model: MemoCMT, items) -> dict[str, list[dict]]:
    """Per-graph inputs (one utterance each) computed by the PyTorch model, keyed by stage."""
    modalities = model.config.modalities
    feeds: dict[str, list[dict]] = {"audio": [], "text": [], "fusion": []}
    with torch.inference_mode():
        for u in items:
            batch = model.prepare([u.audio] if model.audio_encoder is not None else None,
                                  [u.text] if model.text_encoder is not None else None)
            fusion = []
            if model.audio_encoder is not None:
                feeds["audio"].append({"features": batch.audio_features.numpy(), "lengths": batch.audio_lengths.numpy()})
                states, lengths = model.encode_audio(batch.audio_features, batch.audio_lengths)
                fusion += [states.float().numpy(), lengths.numpy().astype("int64")]
            if model.text_encoder is not None:
                feeds["text"].append({"input_ids": batch.input_ids.numpy(), "attention_mask": batch.text_mask.numpy()})
                states, _ = model.encode_text(batch.input_ids, batch.text_mask)
                fusion += [states.float().numpy(), batch.text_mask.sum(dim=1).numpy().astype("int64")]
            feeds["fusion"].append(dict(zip(graph_interface("fusion", modalities)[0], fusion)))
    return feeds


def _cpu_session(model_or_path, disable_optimizations: bool = False):
    from .providers import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if disable_optimizations:  # keep every intermediate tensor as named in the graph
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def activation_ranges(path: Path, tensors: list[str], feeds: list[dict]):
    """Largest |value| of each channel (last axis) of the named float tensors over the calibration feeds."""
    import numpy as np
    import onnx

    model = onnx.load(str(path))
    outputs = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = _cpu_session(model, disable_optimizations=True)
    ranges: dict = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(tensors, feed)):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            ranges[name] = peak if name not in ranges else np.maximum(ranges[name], peak)
    return ranges


def smooth_weight_matmuls(path: Path, out: Path, feeds: list[dict], alpha: float = SMOOTH_ALPHA) -> int:
    """SmoothQuant-style migration of activation range into the weights, exact in float32.

    For each activation X feeding weight MatMuls (X W1, X W2, ...), with per-channel ranges
    a_k = max|X[..., k]| over the calibration feeds and w_k = max over the weights' row k,
    s_k = a_k^alpha / w_k^(1 - alpha); X is divided by s (one Mul) and each W's row k scaled
    by s_k. Dynamic quantization uses one scale for the whole activation, so the outlier
    channels that dominate it shrink. Returns the number of activations smoothed.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    names = set(weight_matmuls(path))
    groups: dict[str, list] = {}
    for node in graph.node:
        if node.name in names and node.input[1] in inits:
            groups.setdefault(node.input[0], []).append(node)
    if not groups:
        return 0
    ranges = activation_ranges(path, list(groups), feeds)
    position = {id(node): i for i, node in enumerate(graph.node)}
    inserts = []
    for x, nodes in groups.items():
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        w_range = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = (np.maximum(ranges[x], 1e-5) ** alpha / np.maximum(w_range, 1e-5) ** (1 - alpha)).astype(np.float32)
        for node, w in zip(nodes, weights):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(w.dtype), node.input[1]))
        inv = numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{x}_smooth_inv_scale")
        graph.initializer.append(inv)
        smoothed = f"{x}_smoothed"
        first = min(nodes, key=lambda n: position[id(n)])
        inserts.append((position[id(first)], onnx.helper.make_node("Mul", [x, inv.name], [smoothed],
                                                                   name=f"{first.name}_smooth")))
        for node in nodes:
            node.input[0] = smoothed
    for index, mul in sorted(inserts, key=lambda t: t[0], reverse=True):
        graph.node.insert(index, mul)
    onnx.save(model, str(out))
    return len(groups)


def worst_output_error(reference: Path, path: Path, feeds: list[dict]) -> float:
    """Largest relative RMS difference of the first output over the feeds (per feed: RMS(diff) / RMS(ref))."""
    import numpy as np

    ref_session, session = _cpu_session(reference), _cpu_session(path)
    name = ref_session.get_outputs()[0].name
    worst = 0.0
    for feed in feeds:
        ref = ref_session.run([name], feed)[0].astype(np.float64)
        ours = session.run([name], feed)[0].astype(np.float64)
        worst = max(worst, float(np.sqrt(np.mean((ours - ref) ** 2)) / max(np.sqrt(np.mean(ref**2)), 1e-12)))
    return worst


def _quantize_dynamic(src: Path, out: Path, nodes: list[str], optimized: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if optimized else {}
    quantize_dynamic(str(src), str(out), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                     weight_type=QuantType.QInt8, per_channel=True, extra_options=extra)


def quantize_int8(path: Path, optimized: bool, feeds: list[dict] | None = None) -> dict:
    """Dynamic int8 quantization of weight MatMuls only, per output channel; returns what was done.

    Measured: quantizing Conv made HuBERT slower; rewriting HuBERT's feature-extractor Convs
    as strided slices + weight MatMul and quantizing those cut its int8 audio graph from 312
    to 240 ms but moved its states by 35-77% (relative RMS) on real speech, against 3-5% with
    the Convs in fp32 (each of the six Convs alone: 35-74%; generated noise only 4%), so
    Convs stay fp32; quantizing the activation x activation
    MatMuls of attention (scores and context) moved 3% of the shipped model's RAVDESS test
    predictions, while weight-only MatMuls keep the speed-up. With calibration `feeds` (graph
    inputs), the graph is also quantized after SmoothQuant-style smoothing, and the smoothed
    version is kept only where it lowers the worst relative output error on the calibration
    feeds by at least SMOOTH_MIN_GAIN.
    """
    nodes = weight_matmuls(path)
    record = {"weight_matmuls": len(nodes), "quantized": len(nodes), "kept_fp32": [], "smoothing": None}
    if not nodes:
        return record
    plain = path.with_suffix(".int8.onnx")
    _quantize_dynamic(path, plain, nodes, optimized)
    if feeds:
        smoothed_fp32 = path.with_suffix(".smooth.onnx")
        smoothed = path.with_suffix(".smooth.int8.onnx")
        try:
            groups = smooth_weight_matmuls(path, smoothed_fp32, feeds)
            _quantize_dynamic(smoothed_fp32, smoothed, nodes, optimized)
            plain_error = worst_output_error(path, plain, feeds)
            smooth_error = worst_output_error(path, smoothed, feeds)
            applied = smooth_error <= (1 - SMOOTH_MIN_GAIN) * plain_error
            record["smoothing"] = {
                "alpha": SMOOTH_ALPHA, "activations": groups, "applied": applied,
                "calibration_items": len(feeds), "worst_rel_error_plain": round(plain_error, 6),
                "worst_rel_error_smoothed": round(smooth_error, 6), "min_gain": SMOOTH_MIN_GAIN,
            }
            logger.info("int8 %s: worst calibration error %.4f plain, %.4f smoothed; smoothing %s", path.name,
                        plain_error, smooth_error, "kept" if applied else "dropped")
            if applied:
                smoothed.replace(plain)
        finally:
            for p in (smoothed_fp32, smoothed):
                p.unlink(missing_ok=True)
    plain.replace(path)
    return record


def convert_fp16(path: Path) -> None:
    """Half-precision weights and compute for CUDA, float32 inputs and outputs kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True))
    model.topological_sort()  # the converter appends its input casts at the end of the node list
    onnx.save(model.model, str(path))


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

    from .providers import ort_version

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
) -> ExportResult:
    """Export, verify against PyTorch, and only then move the bundle to `out`.

    `source` describes where the weights came from ({"checkpoint": name, "sha256": ...} for a
    trained checkpoint); without a SHA-256 the manifest marks the bundle as untrained.
    Raises ExportValidationError (leaving `out` untouched) when any check fails.
    """
    from .onnx_verify import verify_bundle

    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if opset not in IR_VERSION_FOR_OPSET:
        raise ValueError(f"Unsupported opset {opset}; choose one of {', '.join(map(str, OPSETS))}.")
    out = Path(out)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        model = model.eval().cpu()
        calibration, feeds, quantized = None, None, {}
        if precision == "int8":
            from .onnx_verify import calibration_set

            calibration = calibration_set(verify_audio, eval_manifest)
            feeds = calibration_feeds(model, calibration.items)
        for spec in graph_specs(model):
            path = export_graph(spec, staging / GRAPH_FILES[spec.stage], opset)
            if optimize:
                optimize_graph(path)
            if precision == "int8":
                quantized[spec.stage] = quantize_int8(path, optimize, feeds[spec.stage])
            elif precision == "fp16":
                convert_fp16(path)
            if optimize or precision != "fp32":
                pin_ir_version(path, opset)
        if model.text_encoder is not None:
            _save_tokenizer(model, staging)
        manifest = _manifest(model, staging, precision, optimize, opset, source or {})
        if precision == "int8":
            manifest["int8"] = {
                "scheme": INT8_SCHEME,
                "calibration": calibration.describe(),
                "graphs": quantized,
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


# ---------------------------------------------------------------------- CLI


def _default_verify_audio() -> Path | None:
    """Real speech for verification when this checkout sits next to the shared data folder."""
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess-a01-a20"
    return candidate if candidate.is_dir() else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memocmt-export",
        description="Export a MemoCMT model to a verified ONNX bundle for the PyTorch-free runtime.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="trained safetensors checkpoint (default: the shipped model)")
    source.add_argument("--preset", choices=("edge", "paper"),
                        help="export an UNTRAINED preset model (for benchmarks and tests only)")
    parser.add_argument("--out", type=Path, help="bundle folder (default: the user cache for the shipped model, "
                        "else ./memocmt-onnx-<name>-<precision>)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (exact), int8 (dynamic MatMul quantization, CPU) or fp16 (CUDA)")
    parser.add_argument("--optimize", action="store_true", help="apply ONNX Runtime graph fusions offline")
    parser.add_argument("--opset", type=int, choices=OPSETS, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--verify-audio", type=Path, help="folder of speech files to verify with "
                        "(default: a RAVDESS sample folder beside the checkout when present, else generated audio)")
    parser.add_argument("--eval-manifest", type=Path, help="JSONL manifest whose utterances must agree with "
                        "PyTorch on >= 99%% of predictions (fp16/int8)")
    parser.add_argument("--eval-limit", type=int, help="use at most this many utterances of --eval-manifest")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def cli(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return _run_cli(parser, args)
    except (ExportError, CheckpointError, EncoderLoadError, FileNotFoundError) as e:
        print(f"memocmt-export: error: {e}", file=sys.stderr)
        return 1


def _run_cli(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .runtime import default_bundle_path, shipped_checkpoint

    if args.preset:
        logger.warning("Exporting the UNTRAINED %s preset: its predictions are meaningless.", args.preset)
        model, source = MemoCMT.from_preset(args.preset), {"preset": args.preset}
        out = args.out or Path(f"memocmt-onnx-{args.preset}-untrained-{args.precision}")
    else:
        checkpoint = args.checkpoint or shipped_checkpoint()
        if checkpoint is None:
            parser.error("no trained checkpoint ships with this install; pass --checkpoint PATH "
                         "(or --preset edge to export an untrained model for testing)")
        model = load_checkpoint(checkpoint)
        source = {"checkpoint": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}
        default_out = default_bundle_path(checkpoint) if args.checkpoint is None and args.precision == "fp32" else \
            Path(f"memocmt-onnx-{Path(checkpoint).stem}-{args.precision}")
        out = args.out or default_out
    result = export_bundle(
        model, out, precision=args.precision, optimize=args.optimize, opset=args.opset, source=source,
        verify_audio=args.verify_audio or _default_verify_audio(), eval_manifest=args.eval_manifest,
        eval_limit=args.eval_limit,
    )
    parity = result.manifest["parity"]
    print(json.dumps({"bundle": str(result.path), "precision": args.precision, "parity": parity}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
