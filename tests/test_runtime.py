"""The PyTorch-free runtime: loading, integrity checks, predictions, providers, and running without torch."""

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from memocmt.runtime import (
    BUNDLE_VERSION,
    BundleError,
    default_bundle_path,
    ensure_default_bundle,
    load_bundle,
    sha256_file,
)

REPO = Path(__file__).resolve().parents[1]
ort = pytest.importorskip("onnxruntime")
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * (140 + 30 * seed) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny HuBERT + BERT model and its verified bundle (built with PyTorch, served without)."""
    pytest.importorskip("torch")
    from tests.tiny_models import build_tiny_model

    from memocmt.onnx.export import export_bundle

    model = build_tiny_model(tmp_path_factory.mktemp("models"))
    return model, export_bundle(model, tmp_path_factory.mktemp("bundles") / "tiny").path


@pytest.fixture(scope="module")
def bundle(exported):
    return load_bundle(exported[1], providers="cpu", threads=1)


def test_predict_returns_a_prediction_with_stage_timings(bundle):
    p = bundle.predict(_speech(1.5, 0), "the kids are talking by the door")
    assert p.label in bundle.labels and list(p.probabilities) == bundle.labels
    assert abs(sum(p.probabilities.values()) - 1.0) < 1e-5
    assert set(p.timings_ms) == {"features", "audio_encoder", "text_encoder", "fusion", "total"}
    assert all(v >= 0 for v in p.timings_ms.values())
    assert p.timings_ms["total"] >= p.timings_ms["audio_encoder"]
    assert bundle.warmup_ms > 0 and bundle.load_ms >= bundle.warmup_ms


def test_runtime_matches_pytorch_and_batches_like_single_items(exported, bundle):
    model, _ = exported
    audios = [_speech(s, i) for i, s in enumerate((0.5, 2.3, 4.1))]
    texts = ["oh", "", "i honestly cannot believe you did that to me again"]
    batch = bundle.predict_batch(audios, texts)
    singles = [bundle.predict(a, t) for a, t in zip(audios, texts)]
    reference = model.predict_batch(audios, texts)
    for b, s, r in zip(batch, singles, reference):
        np.testing.assert_allclose(list(b.probabilities.values()), list(s.probabilities.values()), atol=1e-5)
        np.testing.assert_allclose(list(b.probabilities.values()), list(r.probabilities.values()), atol=1e-5)


def test_staged_calls_give_the_same_result(bundle):
    audio, text = _speech(2.0, 3), "dogs are sitting by the door"
    audio_enc = bundle.encode_audio(audio)  # may run while ASR is still decoding
    text_enc = bundle.encode_text(text)
    staged = bundle.classify(audio_enc, text_enc)
    direct = bundle.predict(audio, text)
    assert staged.label == direct.label
    np.testing.assert_allclose(list(staged.probabilities.values()), list(direct.probabilities.values()), atol=1e-6)
    assert audio_enc.states.shape[:2] == (1, 3) and audio_enc.lengths.shape == (1,)
    assert text_enc.lengths.tolist() == [8]  # [CLS] + 6 words + [SEP]


def test_bad_inputs_are_refused_in_one_sentence(bundle):
    with pytest.raises(ValueError, match="Transcripts must be strings"):
        bundle.predict(_speech(1.0, 0), 3)
    with pytest.raises(ValueError, match="2 audio clips but 1 transcripts"):
        bundle.predict_batch([_speech(1.0, 0)] * 2, ["a"])
    with pytest.raises(ValueError, match="mono"):
        bundle.predict(np.zeros((16000, 2), dtype=np.float32), "stereo")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_file_is_refused_naming_it(exported, tmp_path):
    path = _copy(exported[1], tmp_path / "tampered")
    data = bytearray((path / "fusion.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "fusion.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"fusion\.onnx does not match the SHA-256"):
        load_bundle(path, providers="cpu")


def test_missing_file_and_wrong_format_version_are_refused(exported, tmp_path):
    path = _copy(exported[1], tmp_path / "old")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = BUNDLE_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 2 .* upgrade memocmt-live"):
        load_bundle(path, providers="cpu")
    manifest["format_version"] = BUNDLE_VERSION
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="lacks tokenizer.json"):
        load_bundle(path, providers="cpu")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path, providers="cpu")


def test_provider_choice_is_logged_and_validated(exported, caplog):
    from memocmt.providers import choose_providers

    with pytest.raises(ValueError, match="choose one of auto, cpu, cuda"):
        choose_providers("tpu")
    with caplog.at_level(logging.INFO, logger="memocmt"):
        b = load_bundle(exported[1], providers="cuda" if not HAS_CUDA else "cpu", warm_up=False)
    assert b.device == "cpu"
    assert all(s.get_providers() == ["CPUExecutionProvider"] for s in b.sessions.values())
    lines = [r.getMessage() for r in caplog.records if "runs on CPU" in r.getMessage()]
    assert len(lines) == 1
    if not HAS_CUDA:
        assert "CUDA requested but" in lines[0]


def _run_without(module: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    prelude = f"import sys\nsys.modules[{module!r}] = None  # any import of it now fails\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_runtime_works_where_torch_cannot_be_imported(exported, tmp_path):
    done = _run_without("torch", f"""
        import json, numpy as np, memocmt
        from memocmt.runtime import load_bundle
        b = load_bundle({str(exported[1])!r}, providers="cpu")
        p = b.predict((0.1 * np.sin(np.arange(24000) / 9)).astype(np.float32), "hello")
        print(json.dumps({{"label": p.label, "torch": [m for m in sys.modules if m.startswith("torch")
                                                       and sys.modules[m] is not None]}}))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["label"] in ("angry", "happy", "sad", "neutral") and out["torch"] == []


def test_package_and_runtime_imports_stay_torch_free(tmp_path):
    code = "import sys, memocmt, memocmt.runtime, memocmt.providers; print(any(m == 'torch' for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_missing_onnxruntime_names_the_extra(exported, tmp_path):
    done = _run_without("onnxruntime", f"""
        from memocmt.runtime import load_bundle
        try:
            load_bundle({str(exported[1])!r})
        except RuntimeError as e:
            print(e)
    """, tmp_path)
    assert "pip install 'memocmt-live[cpu]' or 'memocmt-live[gpu]'" in done.stdout, done.stderr


def test_default_bundle_path_and_first_use_without_torch(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setenv("MEMOCMT_HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / "bundles" / sha256_file(checkpoint)[:12]
    assert default_bundle_path(checkpoint) == expected
    monkeypatch.setattr("memocmt.pretrained.shipped_checkpoint", lambda: checkpoint)
    assert default_bundle_path() == expected
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(RuntimeError, match="PyTorch is not installed.*memocmt-export --out"):
        ensure_default_bundle()


@pytest.mark.requires_cuda
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDAExecutionProvider here")
def test_cuda_bundle_matches_cpu(exported, bundle):
    gpu = load_bundle(exported[1], providers="cuda")
    if gpu.device != "cuda":
        pytest.skip("CUDAExecutionProvider is listed but could not start (no GPU or CUDA libraries)")
    assert all("CUDAExecutionProvider" in s.get_providers() for s in gpu.sessions.values())
    audios, texts = [_speech(1.0, 0), _speech(3.2, 1)], ["oh", "the kids are talking by the door"]
    for g, c in zip(gpu.predict_batch(audios, texts), bundle.predict_batch(audios, texts)):
        np.testing.assert_allclose(list(g.probabilities.values()), list(c.probabilities.values()), atol=1e-3)


@pytest.mark.requires_cuda
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDAExecutionProvider here")
def test_fp16_export_runs_on_cuda(exported, tmp_path):
    from memocmt.onnx.export import export_bundle

    result = export_bundle(exported[0], tmp_path / "fp16", precision="fp16")
    assert result.manifest["parity"]["device"] == "cuda"
    assert result.manifest["parity"]["class_agreement"] >= 0.8
