"""The encoder-choice report: accuracy of the mixed runs per corpus with a paired interval, latency rows, refusals."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script


def _results(folder, encoder, right):
    """A cross-corpus results folder whose mixed run gets the first `right` utterances of each corpus right."""
    folder.mkdir(parents=True)
    rows = {c: [{"id": f"{c}{i}", "speaker": f"s{i % 2}", "label": "happy" if i % 2 else "sad",
                 "predicted": ("happy" if i % 2 else "sad") if i < right else "angry"} for i in range(20)]
            for c in ("ravdess", "nemo")}
    scores = {c: {"ua": right / 20, "wa": right / 20, "ece": 0.1, "n": 20} for c in rows}
    (folder / "cross_corpus.json").write_text(json.dumps({
        "runs": {"mixed": scores}, "audio_encoder": encoder, "epochs": 10, "epoch_size": 392, "perturb": [],
        "command": "python training/recipes/cross_corpus.py"}))
    (folder / "predictions-mixed.json").write_text(json.dumps(rows))
    return folder


def test_accuracy_rows_and_markdown(tmp_path):
    bench = load_script("benchmarks/encoder_choice.py", "encoder_choice_bench")
    tiny = bench.accuracy(_results(tmp_path / "tiny", "whisper-tiny.en", 10))
    base = bench.accuracy(_results(tmp_path / "base", "whisper-base", 16))
    assert tiny["scores"]["nemo"]["ua"] == 0.5 and base["encoder"] == "whisper-base"
    from memocmt.evaluate import compare_predictions

    diff = compare_predictions(base["rows"]["nemo"], tiny["rows"]["nemo"], ["happy", "sad", "angry"]).to_dict()
    assert diff["difference"] == pytest.approx(0.3) and diff["low"] <= 0.3 <= diff["high"]
    latency = {"eos_to_result": {"p50": 300.0, "p95": 420.0}}
    report = {"accuracy": {"tiny": tiny, "base": base}, "base_minus_tiny": {"ravdess": diff, "nemo": diff},
              "latency": {"tiny.en + tiny.en ASR (en)": {"latency_ms": latency, "config": {"asr_context": "short"},
                                                         "within_budget": True, "compute_ms": {"asr_ms": 150.0},
                                                         "rss_mb": {"peak": 500.0}}},
              "machine": {"cpu": "x", "logical_cores": 2, "cpu_flags": ["avx2"]}, "seconds": 1.0}
    text = bench.markdown(report)
    assert "| whisper-base | 80.0% |" in text and "| 300 | 420 | yes |" in text and "avx2" in text


def test_refuses_what_is_not_a_bundle_or_results(tmp_path, capsys):
    bench = load_script("benchmarks/encoder_choice.py", "encoder_choice_bench")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--tiny-bundle", str(tmp_path), "--base-bundle", str(tmp_path), "--tiny-results", str(tmp_path),
                    "--base-results", str(tmp_path)])
    assert stop.value.code == 2 and "is not an exported bundle" in capsys.readouterr().err
