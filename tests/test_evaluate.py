"""Evaluation CLI: output files, label maps, refusal of unmapped labels; the shipped model on real speech."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memocmt.evaluate import align_labels, cli, parse_label_map
from memocmt.manifest import Manifest, Utterance
from tests.test_speaker_norm import _Recorder

REPO_ROOT = Path(__file__).resolve().parents[1]
RAVDESS_DIR = REPO_ROOT.parent / "shared" / "data" / "ravdess-a01-a20"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny untrained model checkpoint and the tone corpus manifest it can be scored on."""
    from memocmt.config import MemoCMTConfig
    from memocmt.model import MemoCMT, save_checkpoint
    from tests.test_train import save_tiny_encoders, write_tone_corpus

    root = tmp_path_factory.mktemp("eval")
    audio_dir, text_dir = save_tiny_encoders(root)
    config = MemoCMTConfig(audio_encoder=str(audio_dir), text_encoder=str(text_dir), labels=["neutral", "angry"],
                           d_model=16, n_heads=2, head_dims=[8])
    path = save_checkpoint(MemoCMT(config), root / "tiny.safetensors")
    return path, write_tone_corpus(root / "data")


def test_eval_cli_writes_every_output(checkpoint, tmp_path):
    model, manifest = checkpoint
    out = tmp_path / "out" / "metrics.json"
    assert cli(["--model", str(model), "--manifest", str(manifest), "--split", "all", "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["n"] == 30 and set(data["recall"]) == {"neutral", "angry"}
    assert len(data["confusion"]) == 2 and sum(map(sum, data["confusion"])) == 30
    assert set(data["roc"]) == {"neutral", "angry"} and 0.0 <= data["roc"]["angry"]["auc"] <= 1.0
    for suffix in (".md", ".confusion.txt", ".confusion.png", ".roc.png"):
        assert (out.parent / f"metrics{suffix}").stat().st_size > 0, suffix
    assert (out.parent / "metrics.md").read_text().startswith("# manifest.jsonl (all)")


def test_speaker_utterances_needs_a_speaker_normalised_model(checkpoint, tmp_path, capsys):
    model, manifest = checkpoint
    assert cli(["--model", str(model), "--manifest", str(manifest), "--split", "all", "--speaker-utterances", "3",
                "--json", str(tmp_path / "m.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "applies to speaker-normalised models" in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_folder_data_with_label_map(checkpoint, tmp_path):
    model, manifest = checkpoint
    import shutil

    for wav in sorted((manifest.parent / "wav").glob("s5_*.wav")):
        folder = {"neutral": "calm", "angry": "mad"}[wav.stem.split("_")[1]]
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, tmp_path / "data" / folder / wav.name)
    (tmp_path / "data" / "surprised").mkdir()
    shutil.copy(wav, tmp_path / "data" / "surprised" / "x.wav")
    out = tmp_path / "m.json"
    assert cli(["--model", str(model), "--data", str(tmp_path / "data"), "--label-map", "calm=neutral,mad=angry,surprised=",
                "--json", str(out), "--no-progress", "--no-transcribe"]) == 0
    assert json.loads(out.read_text())["n"] == 6
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"calm": "neutral", "mad": "angry"}))
    assert cli(["--model", str(model), "--data", str(tmp_path / "data"), "--label-map", str(mapping),
                "--json", str(out), "--no-progress", "--no-transcribe"]) == 2  # 'surprised' is neither known nor mapped


def test_unmapped_labels_are_refused(capsys, checkpoint, tmp_path):
    model, manifest = checkpoint
    items = [Utterance(audio=Path("a.wav"), text="", label=label, speaker="s", split="test") for label in ("calm", "angry")]
    data = Manifest.from_items(items)
    with pytest.raises(ValueError, match=r"labels \['calm'\].*does not cover"):
        align_labels(data, ["neutral", "angry"])
    with pytest.raises(ValueError, match="does not have"):
        align_labels(data, ["neutral", "angry"], {"calm": "bored"})
    aligned = align_labels(data, ["neutral", "angry"], parse_label_map("calm=neutral"))
    assert [u.label for u in aligned] == ["neutral", "angry"] and aligned.labels == ("neutral", "angry")
    assert [u.label for u in align_labels(data, ["neutral", "angry"], {"calm": None})] == ["angry"]
    assert parse_label_map("a=b, c=, d=drop") == {"a": "b", "c": None, "d": None}
    with pytest.raises(ValueError, match="not old=new"):
        parse_label_map("a:b")
    with pytest.raises(SystemExit):
        cli(["--model", str(model), "--data", "x", "--split", "val", "--json", str(tmp_path / "x.json")])
    assert cli(["--model", str(tmp_path / "none.safetensors"), "--manifest", str(manifest), "--json", str(tmp_path / "x.json")]) == 2
    assert "Model not found" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_model_on_held_out_ravdess_actors(tmp_path):
    """The shipped 4-class model beats the linear-probe floor (70.2% UA) on actors it never saw (17-20),
    with each speaker's statistics pooled over its utterances (speaker normalisation)."""
    if not RAVDESS_DIR.is_dir():
        pytest.skip(f"real RAVDESS speech not found at {RAVDESS_DIR}")
    from memocmt.corpora import build_ravdess
    from memocmt.evaluate import evaluate_manifest
    from memocmt.pretrained import default_checkpoint, load_default

    try:
        default_checkpoint()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    manifest = build_ravdess(RAVDESS_DIR, classes="4", test_speakers=[17, 18, 19, 20], val_speakers=[15, 16]).split("test")
    model = load_default()
    assert model.labels == ["neutral", "happy", "sad", "angry"]
    result = evaluate_manifest(model, manifest, batch_size=16, progress=False)
    assert result.report.n == len(manifest) > 100
    assert model.speaker_norm == "mean+std"
    assert result.report.ua > 0.702, result.report.ua  # measured 74.8%; see MODEL_CARD.md
    assert not result.skipped
    assert np.isfinite(result.report.macro_auc) and result.report.macro_auc > 0.65


needs_sox = pytest.mark.skipif(__import__("shutil").which("sox") is None, reason="perturbed voices need sox")


class _LengthPredictor(_Recorder):
    """A speaker_norm predictor whose statistics are the audio's length and whose P(angry) grows with it."""

    def predict_batch(self, audios, texts, speaker_stats=None):
        from memocmt.results import Prediction

        self.stats.append(speaker_stats)
        return [Prediction.from_probabilities(self.labels, np.array([1 - a.size / 20000, a.size / 20000], np.float32))
                for a in audios]


@needs_sox
def test_voices_average_each_perturbed_copy_with_its_own_speaker_statistics(tmp_path):
    import soundfile as sf

    from memocmt.evaluate import evaluate_manifest, evaluate_voices
    from memocmt.perturb import parse_perturbations

    rng = np.random.default_rng(0)
    items = []
    for i, (speaker, n, label) in enumerate([("s1", 1600, "neutral"), ("s1", 3200, "angry"), ("s2", 4800, "angry"),
                                             ("", 2400, "neutral")]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        items.append(Utterance(audio=path, text="", label=label, speaker=speaker, split="test"))
    manifest = Manifest.from_items(items, ["neutral", "angry"])
    predictor = _LengthPredictor()
    result = evaluate_voices(predictor, manifest, parse_perturbations(["speed 0.5"]), batch_size=4, progress=False)
    # the original pass, then the copies at half speed (twice as long), each voice pooled on its own copies;
    # every voice here has fewer than 10 utterances, so each pools with the (zero) prior worth 3 utterances,
    # and the row without a speaker pools alone with it in both
    original, slowed = predictor.stats
    assert np.allclose(original[:, 0, 0, 0], [4800 / 5, 4800 / 5, 4800 / 4, 2400 / 4], rtol=0.01)
    assert np.allclose(slowed[:, 0, 0, 0], [9600 / 5, 9600 / 5, 9600 / 4, 4800 / 4], rtol=0.01)
    plain = evaluate_manifest(_LengthPredictor(), manifest, progress=False).probabilities
    assert np.allclose(result.probabilities[:, 1], (plain[:, 1] + 2 * plain[:, 1]) / 2, rtol=0.01)
    assert [p[0] for p in result.predictions] == [str(u.audio) for u in items] and not result.skipped
    assert result.report.n == 4 and np.allclose(result.probabilities.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="at least one perturbation"):
        evaluate_voices(predictor, manifest, [])


@needs_sox
def test_eval_cli_voices(checkpoint, tmp_path, capsys):
    model, manifest = checkpoint
    out = tmp_path / "metrics.json"
    assert cli(["--model", str(model), "--manifest", str(manifest), "--split", "all", "--voices", "speed 0.9", "pitch 200",
                "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["n"] == 30 and data["voices"] == ["speed 0.9", "pitch 200"]
    assert cli(["--model", str(model), "--manifest", str(manifest), "--voices", "louder 2",
                "--json", str(tmp_path / "bad.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'louder 2' is not '<effect> <amount>'" in err and "Traceback" not in err
    assert not (tmp_path / "bad.json").exists()


def test_eval_cli_compares_with_an_earlier_evaluation(checkpoint, tmp_path, capsys):
    model, manifest = checkpoint
    base = ["--model", str(model), "--manifest", str(manifest), "--split", "all", "--no-progress"]
    first = tmp_path / "first.json"
    assert cli([*base, "--json", str(first)]) == 0
    data = json.loads(first.read_text())
    rows = data["predictions"]
    assert len(rows) == 30 and {r["label"] for r in rows} == {"neutral", "angry"} and all(r["speaker"] for r in rows)
    assert sum(r["predicted"] == r["label"] for r in rows) / 30 == pytest.approx(data["wa"])
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)

    same = tmp_path / "same.json"
    assert cli([*base, "--json", str(same), "--compare", str(first)]) == 0
    compared = json.loads(same.read_text())["compared_with"]
    assert (compared["difference"], compared["low"], compared["high"]) == (0.0, 0.0, 0.0)
    # the tone corpus names its speakers, too few to resample whole: utterances are drawn within each
    assert compared["resampled"] == "utterances within groups" and compared["units"] == len({r["speaker"] for r in rows})

    wrong = tmp_path / "wrong.json"  # an evaluation that got every utterance wrong
    wrong.write_text(json.dumps({**data, "predictions": [
        {**r, "predicted": "angry" if r["label"] == "neutral" else "neutral"} for r in rows]}))
    capsys.readouterr()
    assert cli([*base, "--json", str(tmp_path / "vs-wrong.json"), "--compare", str(wrong)]) == 0
    compared = json.loads((tmp_path / "vs-wrong.json").read_text())["compared_with"]
    assert compared["difference"] == pytest.approx(data["ua"]) and compared["high"] >= compared["difference"]
    assert f"Against {wrong}: UA +{100 * data['ua']:.1f} points" in capsys.readouterr().out

    partial = tmp_path / "partial.json"  # scored on other data: refused, but this evaluation is kept
    partial.write_text(json.dumps({**data, "predictions": rows[:10]}))
    kept = tmp_path / "kept.json"
    assert cli([*base, "--json", str(kept), "--compare", str(partial)]) == 2
    err = capsys.readouterr().err
    assert "scored different utterances (20 only here, 0 only there)" in err and "Traceback" not in err
    assert json.loads(kept.read_text())["n"] == 30 and "compared_with" not in json.loads(kept.read_text())

    old = tmp_path / "old.json"  # written before predictions were listed: refused before any work
    old.write_text(json.dumps({k: v for k, v in data.items() if k != "predictions"}))
    assert cli([*base, "--json", str(tmp_path / "x.json"), "--compare", str(old)]) == 2
    assert "holds no per-utterance predictions" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_data_folder_names_speakers_transcribes_and_says_its_protocol(tmp_path, capsys, monkeypatch):
    """A folder of clips without transcripts: the missing texts are transcribed (cached), a speaker pattern
    starting with '-' is read as the pattern, clips without a speaker are pooled with the prior, and the
    output says which protocol the figure stands for."""
    import shutil

    import soundfile as sf

    from tests.test_speaker_norm import _Recorder

    for i in range(4):
        label = ("neutral", "angry")[i % 2]
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "data" / label / f"clip{i}-{i % 2 + 1}.wav",
                 (0.1 * np.sin(np.arange(8000 + 800 * i) * 0.05)).astype(np.float32), 16000)
    (tmp_path / "data" / "neutral" / "clip0-1.txt").write_text("hello there")

    class Predictor(_Recorder):
        speaker_norm = "mean"

    import memocmt.evaluate as evaluate

    seen = {}

    def fake_transcribe(manifest, cache, config, only_missing=False):
        seen["missing"] = sorted(u.audio.name for u in manifest if not u.text)
        seen["only_missing"], seen["cache"] = only_missing, cache
        return manifest

    import memocmt.transcribe_cache as transcribe_cache

    monkeypatch.setattr(evaluate, "load_predictor", lambda path=None: Predictor())
    monkeypatch.setattr(transcribe_cache, "transcribe_manifest", fake_transcribe)
    out = tmp_path / "out.json"
    assert evaluate.cli(["--data", str(tmp_path / "data"), "--speaker-pattern", r"-(\d+)\.wav$",
                         "--asr-cache", str(tmp_path / "asr.json"), "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert seen == {"missing": ["clip1-2.wav", "clip2-1.wav", "clip3-2.wav"], "only_missing": True,
                    "cache": tmp_path / "asr.json"}
    assert sorted({r["speaker"] for r in data["predictions"]}) == ["1", "2"]
    assert "pooled with the model's prior" in data["protocol"] and data["protocol"] in capsys.readouterr().out
    assert "calibration" in data and (tmp_path / "out.reliability.png").is_file()
    assert evaluate.cli(["--data", str(tmp_path / "data"), "--json", str(out), "--no-progress", "--no-transcribe"]) == 0
    assert "4 utterance(s) without a speaker" in json.loads(out.read_text())["protocol"]
    with pytest.raises(SystemExit):
        evaluate.cli(["--manifest", str(out), "--speaker-pattern", "x", "--json", str(out)])
