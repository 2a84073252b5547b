"""Verification of an exported bundle against the PyTorch model it came from.

Like optimum's `validate_model_outputs`: every graph passes the ONNX checker and shape
inference, then the runtime (the same code users call) and PyTorch run on the same inputs
(real or generated utterances of several lengths, one at a time and as a padded batch);
output names, shapes, lengths and values are compared and the figures returned for the
manifest. Any failed check raises ExportValidationError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLE_RATE, load_audio
from ..bundle import AudioEncoding, Bundle, TextEncoding, load_bundle, to_host
from ..bundle_format import GRAPH_FILES, IR_VERSION_FOR_OPSET, ExportValidationError, graph_interface, read_bundle_manifest
from ..fusion import utterance_stats
from ..language_policy import has_audio_fallback
from ..model import MemoCMT
from ..speaker_norm import pool_stats

logger = logging.getLogger("memocmt")

LOGITS_ATOL_FP32 = 1e-4  # max abs logit difference of the fp32 fusion graph on PyTorch's encoder states
# end to end (the fusion graph on the ONNX encoders' states): a speaker-normalised head divides the states
# by per-speaker standard deviations, which magnifies the encoders' float rounding (shipped head, real speech:
# 1.0e-4 end to end, the fusion graph alone 3.6e-6 on generated speech)
END_TO_END_LOGITS_ATOL_FP32 = 1e-3
STATES_RTOL_FP32 = 1e-4  # encoder states: max abs difference relative to max(1, max |reference|)
MIN_AGREEMENT = 0.99  # reduced precision: predicted class agreement required on an evaluation set
MAX_VERIFY_FILES = 4
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
EXTRA_TEXTS = (
    "",
    "Oh.",
    "I honestly cannot believe you did that to me again, after everything we agreed on yesterday evening.",
)


@dataclass
class Utterance:
    name: str
    audio: np.ndarray  # float32 16 kHz mono
    text: str


def _generated(seconds: float, seed: int) -> np.ndarray:
    """A voiced-speech-like test signal: harmonics with vibrato under a syllable envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 + 40 * seed + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    audio = 0.1 * voiced * envelope + 0.01 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def verification_set(audio_dir: str | Path | None = None) -> list[Utterance]:
    """Utterances of several lengths (about 0.6 s to 7 s) with texts of several token counts.

    Real speech from `audio_dir` (RAVDESS file names give their sentence) when given, else
    generated audio.
    """
    items: list[Utterance] = []
    files = []
    if audio_dir is not None:
        files = sorted(p for p in Path(audio_dir).rglob("*") if p.suffix.lower() in (".wav", ".flac"))
        files = files[:: max(1, len(files) // MAX_VERIFY_FILES)][:MAX_VERIFY_FILES]
    for i, path in enumerate(files):
        parts = path.stem.split("-")
        text = RAVDESS_STATEMENTS.get(parts[4], EXTRA_TEXTS[2]) if len(parts) == 7 else EXTRA_TEXTS[2]
        items.append(Utterance(path.name, load_audio(path), text))
    if items:
        items.append(Utterance("short crop", items[0].audio[: int(0.6 * SAMPLE_RATE)], EXTRA_TEXTS[1]))
        items.append(Utterance("mid crop", items[-2].audio[: int(1.5 * SAMPLE_RATE)], EXTRA_TEXTS[0]))
        joined = np.concatenate([u.audio for u in items[: len(files)]][:3])
        items.append(Utterance("long join", joined, EXTRA_TEXTS[2]))
    else:
        for seed, seconds in enumerate((0.6, 1.7, 3.0, 5.3)):
            items.append(Utterance(f"generated {seconds} s", _generated(seconds, seed), EXTRA_TEXTS[(seed % 3)]))
        items.append(Utterance("generated long", _generated(7.1, 4), "Dogs are sitting by the door."))
    return items


def evaluation_set(manifest_path: str | Path, limit: int | None = None) -> list[Utterance]:
    """Utterances of a JSONL manifest (its test split when it has one)."""
    from ..manifest import read_manifest

    manifest = read_manifest(manifest_path)
    items = [u for u in manifest if u.split == "test"] or list(manifest)
    items = items[:limit] if limit else items
    return [Utterance(str(u.id or u.audio), load_audio(u.audio), u.text) for u in items]


CALIBRATION_ITEMS = 64  # utterances that int8 calibration measures, never from a test split


@dataclass
class CalibrationSet:
    items: list[Utterance]
    source: str  # where they came from

    def describe(self) -> dict:
        return {"source": self.source, "items": len(self.items)}


def calibration_set(audio_dir: str | Path | None = None, eval_manifest: str | Path | None = None,
                    limit: int = CALIBRATION_ITEMS) -> CalibrationSet:
    """Utterances for int8 calibration: the evaluation manifest's val, then train utterances
    (spread evenly, never its test split) when given, else the verification set."""
    if eval_manifest is not None:
        from ..manifest import read_manifest

        manifest = read_manifest(eval_manifest)
        pool = [u for u in manifest if u.split == "val"] + [u for u in manifest if u.split == "train"]
        if pool:
            chosen = pool[:: max(1, len(pool) // limit)][:limit] if len(pool) > limit else pool
            items = [Utterance(str(u.id or u.audio), load_audio(u.audio), u.text) for u in chosen]
            return CalibrationSet(items, f"{Path(eval_manifest).name} (val/train splits)")
    source = "verification audio" if audio_dir is not None else "generated verification audio"
    return CalibrationSet(verification_set(audio_dir), source)


# ---------------------------------------------------------------------- structural checks


def check_graph_files(folder: Path) -> None:
    """onnx.checker, shape inference and the pinned IR version, for every graph in the folder."""
    import onnx

    manifest = read_bundle_manifest(folder)
    for stage, name in GRAPH_FILES.items():
        path = folder / name
        if stage not in manifest["graphs"]:
            continue
        try:
            onnx.checker.check_model(str(path))
            model = onnx.load(str(path))
            standard = all(n.domain in ("", "ai.onnx") for n in model.graph.node)
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=standard)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise ExportValidationError(f"{name} fails the ONNX checker or shape inference: {e}") from e
        pinned = IR_VERSION_FOR_OPSET[manifest["opset"]]
        if model.ir_version != pinned:
            raise ExportValidationError(f"{name} has IR version {model.ir_version}, not the pinned {pinned}.")


def _check_interfaces(bundle: Bundle, model: MemoCMT) -> None:
    """Each graph the model needs is present, with the input and output names the runtime feeds."""
    stages = [s for s, enc in (("audio", model.audio_encoder), ("text", model.text_encoder)) if enc is not None]
    if sorted(bundle.sessions) != sorted([*stages, "fusion"]):
        raise ExportValidationError(f"The bundle has graphs {sorted(bundle.sessions)}; expected {[*stages, 'fusion']}.")
    for stage, session in bundle.sessions.items():
        expected = graph_interface(stage, model.config.modalities, model.head.speaker_norm,
                                   stage == "fusion" and has_audio_fallback(model.config))
        found = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if found != expected:
            raise ExportValidationError(
                f"The {stage} graph has inputs {found[0]} and outputs {found[1]}; expected {expected[0]} and {expected[1]}."
            )


# ---------------------------------------------------------------------- numeric checks


@dataclass
class _Diffs:
    audio_states: float = 0.0  # relative to max(1, max |reference|)
    text_states: float = 0.0
    logits: float = 0.0  # absolute, end to end (the fusion graph on the ONNX encoders' states)
    fusion_logits: float = 0.0  # absolute, the fusion graph alone (on PyTorch's states)
    audio_logits: float = 0.0  # absolute, the fusion graph's audio-only output (language fallback), end to end

    def update(self, other: "_Diffs") -> None:
        for k in vars(self):
            setattr(self, k, max(getattr(self, k), getattr(other, k)))


def _rel_diff(name: str, ours: np.ndarray, ref: torch.Tensor) -> float:
    ref = ref.float().numpy()
    if ours.shape != ref.shape:
        raise ExportValidationError(f"ONNX {name} has shape {ours.shape} but PyTorch gives {ref.shape}.")
    return float(np.max(np.abs(ours - ref))) / max(1.0, float(np.max(np.abs(ref))))


@torch.inference_mode()
def _compare(bundle: Bundle, model: MemoCMT, items: list[Utterance]) -> tuple[_Diffs, np.ndarray, np.ndarray]:
    """Run one (padded) batch through both; return the differences and both logits."""
    audios = [u.audio for u in items] if bundle.uses_audio else None
    texts = [u.text for u in items] if bundle.uses_text else None
    batch = model.prepare(audios, texts)
    audio_enc, text_enc = bundle.encode(audios, texts)
    diffs = _Diffs()
    ref_audio = ref_text = (None, None)
    if audio_enc is not None:
        ref_audio = model.encode_audio(batch.audio_features, batch.audio_lengths)
        if not np.array_equal(audio_enc.lengths, ref_audio[1].numpy()):
            raise ExportValidationError(f"ONNX audio lengths {audio_enc.lengths} differ from PyTorch's {ref_audio[1]}.")
        diffs.audio_states = _rel_diff("audio states", to_host(audio_enc.states), ref_audio[0])
    if text_enc is not None:
        ids, mask = bundle.tokenize(texts)
        if not (np.array_equal(ids, batch.input_ids.numpy()) and np.array_equal(mask, batch.text_mask.numpy())):
            raise ExportValidationError("The bundle's tokenizer.json gives other token ids than the PyTorch tokenizer.")
        ref_text = model.encode_text(batch.input_ids, batch.text_mask)
        diffs.text_states = _rel_diff("text states", to_host(text_enc.states), ref_text[0])
    stats = None
    if model.head.speaker_norm:  # shared statistics, as for utterances of one speaker: checks the graph's input
        own = utterance_stats(ref_audio[0].float(), ref_audio[1]).numpy()
        stats = torch.from_numpy(np.repeat(pool_stats(own)[None], len(items), axis=0))
    logits = bundle.logits(audio_enc, text_enc, None if stats is None else stats.numpy())
    ref_logits = model.head(ref_audio[0], ref_audio[1], ref_text[0], ref_text[1], stats).float().numpy()
    if logits.shape != ref_logits.shape:
        raise ExportValidationError(f"ONNX logits have shape {logits.shape} but PyTorch gives {ref_logits.shape}.")
    diffs.logits = float(np.max(np.abs(logits - ref_logits)))
    # the fusion graph on exactly PyTorch's inputs: its own error, apart from the encoders' rounding that
    # the head's speaker standardisation can magnify
    as_bundle = lambda enc, ref, kind: None if enc is None else kind(  # noqa: E731
        ref[0].float().numpy().astype(to_host(enc.states).dtype), ref[1].numpy().astype(np.int64))
    fused = bundle.logits(as_bundle(audio_enc, ref_audio, AudioEncoding), as_bundle(text_enc, ref_text, TextEncoding),
                          None if stats is None else stats.numpy())
    diffs.fusion_logits = float(np.max(np.abs(fused - ref_logits)))
    if bundle.audio_fallback:  # the prediction for a language the model does not read (memocmt.language_policy)
        ours = bundle.logits(audio_enc, text_enc, None if stats is None else stats.numpy(), read_text=False)
        ref = model.head.audio_logits(ref_audio[0], ref_audio[1], stats).float().numpy()
        diffs.audio_logits = float(np.max(np.abs(ours - ref)))
    return diffs, logits, ref_logits


def _agreement(bundle: Bundle, model: MemoCMT, items: list[Utterance]) -> tuple[float, _Diffs]:
    """Predicted-class agreement over items run one at a time, and the largest differences."""
    agree, diffs = 0, _Diffs()
    for u in items:
        d, logits, ref = _compare(bundle, model, [u])
        diffs.update(d)
        agree += int(np.argmax(logits[0]) == np.argmax(ref[0]))
    return agree / len(items), diffs


def _load_for_verification(folder: Path, precision: str) -> Bundle:
    from ..providers import CUDA_EP, import_onnxruntime

    has_cuda = CUDA_EP in import_onnxruntime().get_available_providers()
    providers = "cuda" if precision == "fp16" and has_cuda else "cpu"
    try:
        return load_bundle(folder, providers=providers, warm_up=False)
    except RuntimeError as e:
        if precision == "fp16" and not has_cuda:
            raise ExportValidationError(
                f"The fp16 bundle cannot run on this machine's CPU provider, and fp16 is verified where it runs: "
                f"export it on a machine with onnxruntime-gpu and CUDA ({e})."
            ) from e
        raise ExportValidationError(f"ONNX Runtime cannot load the exported bundle: {e}") from e


def verify_bundle(
    model: MemoCMT,
    folder: str | Path,
    precision: str,
    audio_dir: str | Path | None = None,
    eval_manifest: str | Path | None = None,
    eval_limit: int | None = None,
) -> dict:
    """Check a freshly written bundle folder against `model`; return the parity figures."""
    folder = Path(folder)
    model = model.eval()
    check_graph_files(folder)
    bundle = _load_for_verification(folder, precision)
    _check_interfaces(bundle, model)
    items = verification_set(audio_dir)
    batch_diffs, _, _ = _compare(bundle, model, items)
    agreement, diffs = _agreement(bundle, model, items)
    diffs.update(batch_diffs)
    report = {
        "device": bundle.device,
        "verification_items": len(items),
        "verification_audio": "real" if audio_dir is not None else "generated",
        "audio_seconds": [round(u.audio.size / SAMPLE_RATE, 2) for u in items],
        "batch_size": len(items),
        "max_abs_diff_logits": diffs.logits,
        "max_abs_diff_fusion_logits": diffs.fusion_logits,
        **({"max_abs_diff_audio_logits": diffs.audio_logits} if bundle.audio_fallback else {}),
        "max_rel_diff_audio_states": diffs.audio_states,
        "max_rel_diff_text_states": diffs.text_states,
        "class_agreement": agreement,
    }
    logger.info("Parity on %d utterances (+ padded batch): %s", len(items), report)
    if precision == "fp32":  # each graph against its PyTorch module on the same inputs
        worst_states = max(diffs.audio_states, diffs.text_states)
        if (diffs.fusion_logits > LOGITS_ATOL_FP32 or worst_states > STATES_RTOL_FP32
                or max(diffs.logits, diffs.audio_logits) > END_TO_END_LOGITS_ATOL_FP32):
            raise ExportValidationError(
                f"ONNX and PyTorch differ: max fusion logit difference {diffs.fusion_logits:.2e} (allowed "
                f"{LOGITS_ATOL_FP32:.0e}), max relative states difference {worst_states:.2e} (allowed "
                f"{STATES_RTOL_FP32:.0e}), max end-to-end logit difference {max(diffs.logits, diffs.audio_logits):.2e} (allowed "
                f"{END_TO_END_LOGITS_ATOL_FP32:.0e})."
            )
        report["tolerance_logits"] = LOGITS_ATOL_FP32  # the fusion graph's
        report["tolerance_end_to_end_logits"] = END_TO_END_LOGITS_ATOL_FP32
    if eval_manifest is not None:
        eval_items = evaluation_set(eval_manifest, eval_limit)
        eval_agreement, _ = _agreement(bundle, model, eval_items)
        report.update(eval_items=len(eval_items), eval_class_agreement=eval_agreement)
        if eval_agreement < MIN_AGREEMENT:
            raise ExportValidationError(
                f"The {precision} bundle predicts the PyTorch class on only {eval_agreement:.1%} of "
                f"{len(eval_items)} evaluation utterances (at least {MIN_AGREEMENT:.0%} required)."
            )
    elif precision != "fp32":
        logger.warning("The %s bundle agrees with PyTorch on %.0f%% of only %d verification utterances; "
                       "pass --eval-manifest to calibrate and check it on real data.", precision, agreement * 100, len(items))
    return report
