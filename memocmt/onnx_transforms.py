"""Graph transforms applied to exported ONNX graphs: ORT's offline optimization, int8
dynamic quantization of weight MatMuls (with SmoothQuant-style activation smoothing where
calibration shows it helps) and fp16 conversion for CUDA. Each rewrites a graph file in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .model import MemoCMT
from .runtime import graph_interface

logger = logging.getLogger("memocmt")


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
    root = logging.getLogger()
    root.addFilter(_quiet_preprocessing_advice)  # ORT prints it for every graph it quantizes
    try:
        quantize_dynamic(str(src), str(out), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                         weight_type=QuantType.QInt8, per_channel=True, extra_options=extra)
    finally:
        root.removeFilter(_quiet_preprocessing_advice)


def _quiet_preprocessing_advice(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


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
