"""Graph transforms applied to exported ONNX graphs: ORT's offline optimization, int8
dynamic quantization of weight MatMuls (accuracy-aware with calibration data: the MatMuls
that move the model's logits most stay fp32) and fp16 conversion for CUDA. Each rewrites a
graph file in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..bundle_format import graph_interface
from ..fusion import pool_with_prior, utterance_stats
from ..model import MemoCMT

logger = logging.getLogger("memocmt")


def optimize_graph(path: Path) -> None:
    """ONNX Runtime's provider-independent fusions (attention, LayerNorm, GELU), saved offline."""
    from ..providers import import_onnxruntime

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
            if model.head.speaker_norm:  # each utterance's own statistics with the prior, as the runtime's default
                own = utterance_stats(torch.from_numpy(fusion[0]), torch.from_numpy(fusion[1]))
                fusion.append(pool_with_prior(own, model.head.speaker_prior).numpy())
            feeds["fusion"].append(dict(zip(graph_interface("fusion", modalities, model.head.speaker_norm)[0], fusion)))
    return feeds


def _cpu_session(model_or_path):
    from ..providers import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


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


INT8_MAX_LOGIT_SHIFT = 0.1  # accuracy budget: mean over calibration utterances of the largest logit change
INT8_MAX_KEPT_FRACTION = 0.5  # never keep more than this share of a graph's weight MatMuls in fp32


def logit_shift_scorer(model: MemoCMT, feeds: dict[str, list[dict]], stage: str) -> Callable[[Path], float]:
    """Error of a candidate graph for `stage` in the model's own terms.

    The candidate runs on the calibration feeds; the other stages keep their PyTorch values
    and the PyTorch fusion head turns the result into logits. The score is the mean over
    utterances of the largest absolute logit change. Measured on the shipped edge model: its
    audio encoder's int8 states moved the logits only through the per-layer statistics of
    the `+stats` pooling, so a graph's own output error does not rank what matters.
    """
    import numpy as np

    fusion_names = graph_interface("fusion", model.config.modalities, model.head.speaker_norm)[0]

    def head_logits(feed: dict):
        args = [torch.from_numpy(feed[n]) if n in feed else None
                for n in ("audio_states", "audio_lengths", "text_states", "text_lengths", "speaker_stats")]
        with torch.inference_mode():
            return model.head(*args).float().numpy()

    reference = [head_logits(f) for f in feeds["fusion"]]

    def score(candidate: Path) -> float:
        session = _cpu_session(candidate)
        shifts = []
        for i, ref in enumerate(reference):
            if stage == "fusion":
                logits = session.run(["logits"], feeds["fusion"][i])[0]
            else:
                fusion = dict(feeds["fusion"][i])
                outputs = session.run(None, feeds[stage][i])
                fusion[f"{stage}_states"] = outputs[0]
                if stage == "audio":
                    fusion["audio_lengths"] = outputs[1].astype(np.int64)
                    fusion.pop("speaker_stats", None)  # the candidate's own statistics, as at run time
                logits = head_logits({k: fusion[k] for k in fusion_names if k in fusion})
            shifts.append(float(np.abs(logits - ref).max()))
        return float(np.mean(shifts))

    return score


def quantize_int8(path: Path, optimized: bool, score: Callable[[Path], float] | None = None,
                  budget: float = INT8_MAX_LOGIT_SHIFT) -> dict:
    """Dynamic int8 quantization of weight MatMuls only, per output channel; returns what was done.

    With `score` (candidate graph -> error; the export passes `logit_shift_scorer`), while the
    error exceeds `budget` MatMuls stay fp32 one at a time, each step the one that lowers the
    error most (accuracy-aware mixed precision; at most INT8_MAX_KEPT_FRACTION of them; see
    `_keep_sensitive_fp32`).

    Measured, and left out: quantizing Conv made HuBERT slower; rewriting convolutions as
    strided slices + weight MatMul and quantizing those cut a random-weight HuBERT-base's int8
    audio graph by 20-30% but moved its states by 40-50% (relative RMS) on real speech, each
    layer alone; for the shipped Whisper tiny.en encoder the calibrated selection ranked its two
    rewritten convolutions among the four most harmful and kept both in fp32, so nothing was
    gained; quantizing attention's activation x activation MatMuls moved 3% of the shipped model's
    RAVDESS test predictions. SmoothQuant-style smoothing (activation range moved into the
    weights, fitted on RAVDESS calibration utterances) cut the shipped audio encoder's
    calibration error from 0.235 to 0.147, but that bundle then agreed with PyTorch on only 85%
    of the synthetic test utterances (100% without it): it did not carry over to other speech.
    """
    nodes = weight_matmuls(path)
    record = {"weight_matmuls": len(nodes), "quantized": len(nodes), "kept_fp32": []}
    if not nodes:
        return record
    candidate = path.with_suffix(".int8.onnx")
    try:
        _quantize_dynamic(path, candidate, nodes, optimized)
        if score is not None:
            error = score(candidate)
            record["accuracy"] = {"metric": "mean largest logit change over the calibration utterances",
                                  "budget": budget, "all_int8": round(error, 6), "final": round(error, 6)}
            logger.info("int8 %s: calibration error %.4f with every weight MatMul quantized (budget %.4f)",
                        path.name, error, budget)
            if error > budget:
                kept, error = _keep_sensitive_fp32(path, candidate, nodes, optimized, score, budget, path.name)
                record.update(quantized=len(nodes) - len(kept), kept_fp32=kept)
                record["accuracy"]["final"] = round(error, 6)
        candidate.replace(path)
    finally:
        candidate.unlink(missing_ok=True)
    return record


def _keep_sensitive_fp32(source: Path, candidate: Path, nodes: list[str], optimized: bool,
                         score: Callable[[Path], float], budget: float, name: str) -> tuple[list[str], float]:
    """Choose the MatMuls to keep in fp32 until `score` is within `budget`; `candidate` ends up as
    the chosen graph.

    Greedy forward selection: each step keeps in fp32 the one further MatMul that lowers the
    combined error most, among the INT8_MAX_KEPT_FRACTION of them that hurt most when quantized
    alone. Errors do not add up (on the shipped model, keeping the six worst-alone MatMuls one
    by one gave 0.130, 0.109, 0.105, 0.126, 0.108, 0.083), so the ranking alone is only the
    candidate list. The fewest MatMuls that meet the budget win; if none does, the lowest error.
    """
    trial, step_best = candidate.with_suffix(".trial.onnx"), candidate.with_suffix(".step.onnx")
    try:
        alone = {}
        for node in nodes:
            _quantize_dynamic(source, trial, [node], optimized)
            alone[node] = score(trial)
        max_kept = max(1, int(len(nodes) * INT8_MAX_KEPT_FRACTION))
        pool = sorted(nodes, key=alone.get, reverse=True)[:max_kept]
        kept: list[str] = []
        best: tuple[float, list[str]] | None = None
        while len(kept) < max_kept:
            step: tuple[float, str] | None = None
            for node in pool:
                if node in kept:
                    continue
                _quantize_dynamic(source, trial, [n for n in nodes if n not in kept and n != node], optimized)
                error = score(trial)
                if step is None or error < step[0]:
                    step = (error, node)
                    trial.replace(step_best)
            kept.append(step[1])
            logger.info("int8 %s: %d of %d MatMuls kept in fp32, calibration error %.4f (budget %.4f)",
                        name, len(kept), len(nodes), step[0], budget)
            if best is None or step[0] < best[0]:
                best = (step[0], list(kept))
                step_best.replace(candidate)
            if step[0] <= budget:
                break
        if best[0] > budget:
            logger.warning("int8 %s: error %.4f with %d MatMuls in fp32 is still above the budget %.4f; "
                           "the agreement check decides", name, best[0], len(best[1]), budget)
        return best[1], best[0]
    finally:
        trial.unlink(missing_ok=True)
        step_best.unlink(missing_ok=True)


def convert_fp16(path: Path) -> None:
    """Half-precision weights and compute for CUDA, float32 inputs and outputs kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True))
    model.topological_sort()  # the converter appends its input casts at the end of the node list
    onnx.save(model.model, str(path))
