"""int8 export: accuracy-aware mixed precision, calibration data, batching and what the manifest records."""

import json
import shutil

import numpy as np
import pytest

from tests.tiny_models import build_tiny_model

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from memocmt.onnx import transforms as onnx_transforms  # noqa: E402
from memocmt.onnx.export import ExportValidationError, export_bundle  # noqa: E402
from memocmt.onnx.transforms import calibration_feeds, logit_shift_scorer, quantize_int8, weight_matmuls  # noqa: E402
from memocmt.onnx.verify import calibration_set, verification_set  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-int8-models"))


@pytest.fixture(scope="module")
def fp32(tiny, tmp_path_factory):
    return export_bundle(tiny, tmp_path_factory.mktemp("int8-bundles") / "fp32").path


@pytest.fixture(scope="module")
def feeds(tiny):
    return calibration_feeds(tiny, verification_set(None))


def _manifest_rows(folder, splits):
    import soundfile as sf

    rows = []
    for i, split in enumerate(splits):
        wav = folder / f"u{i}.wav"
        t = np.arange(int((0.6 + 0.3 * i) * 16000)) / 16000
        sf.write(wav, 0.2 * np.sin(2 * np.pi * (140 + 30 * i) * t), 16000)
        rows.append({"audio": wav.name, "text": "the kids are talking", "label": "happy", "speaker": f"s{i}",
                     "split": split, "id": f"u{i}"})
    path = folder / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_without_calibration_quantizes_plainly(fp32, tmp_path):
    path = tmp_path / "fusion.onnx"
    shutil.copy(fp32 / "fusion.onnx", path)
    record = quantize_int8(path, False)
    assert record["kept_fp32"] == [] and record["quantized"] == record["weight_matmuls"] > 0
    assert "accuracy" not in record


def test_calibration_never_uses_the_test_split(tmp_path):
    manifest = _manifest_rows(tmp_path, ["test", "val", "train", "test", "train"])
    cal = calibration_set(None, manifest)
    assert sorted(u.name for u in cal.items) == ["u1", "u2", "u4"]
    assert cal.describe() == {"source": "eval.jsonl (val/train splits)", "items": 3}
    only_test = _manifest_rows(tmp_path, ["test", "test"])
    assert calibration_set(None, only_test).source == "generated verification audio"


def test_int8_manifest_records_the_scheme(tiny, tmp_path):
    manifest = _manifest_rows(tmp_path, ["val", "train", "test", "test"])
    result = export_bundle(tiny, tmp_path / "int8", precision="int8", eval_manifest=manifest)
    int8 = result.manifest["int8"]
    stored = json.loads((result.path / "manifest.json").read_text())["int8"]
    assert stored == int8
    assert int8["calibration"] == {"source": "eval.jsonl (val/train splits)", "items": 2}
    assert set(int8["graphs"]) == {"audio", "text", "fusion"}
    for record in int8["graphs"].values():
        assert record["kept_fp32"] == [] and record["quantized"] == record["weight_matmuls"]
        assert record["accuracy"]["budget"] == onnx_transforms.INT8_MAX_LOGIT_SHIFT  # scored through the head
        assert record["accuracy"]["final"] <= record["accuracy"]["all_int8"]
    assert result.manifest["parity"]["eval_items"] == 2
    assert int8["fp32_graphs"] == []


def test_int8_can_leave_chosen_graphs_in_fp32(tiny, tmp_path):
    import onnx

    result = export_bundle(tiny, tmp_path / "mixed", precision="int8", int8_graphs=("text", "fusion"))
    assert set(result.manifest["int8"]["graphs"]) == {"text", "fusion"}
    assert result.manifest["int8"]["fp32_graphs"] == ["audio"]
    ops = {name: {n.op_type for n in onnx.load(str(result.path / f"{name}_encoder.onnx")).graph.node}
           for name in ("audio", "text")}
    assert "MatMulInteger" not in ops["audio"] and "DynamicQuantizeLinear" not in ops["audio"]
    assert "MatMulInteger" in ops["text"] or "DynamicQuantizeMatMul" in ops["text"]
    with pytest.raises(ValueError, match="int8_graphs must name"):
        export_bundle(tiny, tmp_path / "bad", precision="int8", int8_graphs=("vision",))
    with pytest.raises(ValueError, match="int8_graphs must name"):
        export_bundle(tiny, tmp_path / "bad", precision="fp32", int8_graphs=("text",))


def test_int8_agreement_bar_still_refuses(tiny, tmp_path, monkeypatch):
    manifest = _manifest_rows(tmp_path, ["val", "test", "test"])
    monkeypatch.setattr("memocmt.onnx.verify.MIN_AGREEMENT", 1.01)
    with pytest.raises(ExportValidationError, match="int8 bundle predicts the PyTorch class"):
        export_bundle(tiny, tmp_path / "refused", precision="int8", eval_manifest=manifest)
    assert not (tmp_path / "refused").exists()


def _fp32_matmuls(path) -> set[str]:
    return {n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"}


def test_the_matmuls_that_hurt_stay_fp32_until_within_budget(fp32, tmp_path):
    path = tmp_path / "text.onnx"
    shutil.copy(fp32 / "text_encoder.onnx", path)
    nodes = weight_matmuls(path)
    harmful = set(nodes[1:3])

    def score(candidate):  # each harmful MatMul that got quantized costs one unit
        return float(len(harmful - _fp32_matmuls(candidate)))

    record = quantize_int8(path, False, score=score, budget=0.5)
    assert set(record["kept_fp32"]) == harmful
    assert record["quantized"] == len(nodes) - 2
    assert record["accuracy"]["all_int8"] == 2.0 and record["accuracy"]["final"] == 0.0
    assert _fp32_matmuls(path) >= harmful and not (_fp32_matmuls(path) & (set(nodes) - harmful))
    assert not [p for p in tmp_path.iterdir() if p.name != "text.onnx"]  # no trial graphs left behind


def test_an_unreachable_budget_keeps_the_fewest_fp32_and_lets_agreement_decide(fp32, tmp_path, caplog):
    path = tmp_path / "fusion.onnx"
    shutil.copy(fp32 / "fusion.onnx", path)
    with caplog.at_level("WARNING", logger="memocmt"):
        record = quantize_int8(path, False, score=lambda candidate: 1.0, budget=0.5)
    assert len(record["kept_fp32"]) == 1 and record["accuracy"]["final"] == 1.0
    assert "still above the budget" in caplog.text


def test_int8_batches_give_the_one_at_a_time_answers(tiny, tmp_path):
    # dynamic int8 takes one activation scale per tensor: batched, utterances would shift each other
    from memocmt.runtime import load_bundle

    bundle = load_bundle(export_bundle(tiny, tmp_path / "int8", precision="int8").path, providers="cpu")
    items = verification_set(None)
    audios, texts = [u.audio for u in items], [u.text for u in items]
    alone = np.array([list(bundle.predict(a, t).probabilities.values()) for a, t in zip(audios, texts)])
    batched = np.array([list(p.probabilities.values()) for p in bundle.predict_batch(audios, texts)])
    assert np.array_equal(alone, batched)
    bundle.item_by_item = False  # what batching did before: the same utterances, other answers
    coupled = np.array([list(p.probabilities.values()) for p in bundle.predict_batch(audios, texts)])
    assert not np.array_equal(alone, coupled)


def test_the_scorer_measures_logit_change_through_the_head(tiny, fp32, feeds, tmp_path):
    for stage, name in (("audio", "audio_encoder.onnx"), ("text", "text_encoder.onnx"), ("fusion", "fusion.onnx")):
        score = logit_shift_scorer(tiny, feeds, stage)
        assert score(fp32 / name) < 1e-4, stage  # the exact graph moves nothing
        quantized = tmp_path / name
        shutil.copy(fp32 / name, quantized)
        quantize_int8(quantized, False)
        assert score(quantized) > score(fp32 / name), stage
