"""Shared fixtures: real speech when the data folder is present, tiny random encoders otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RAVDESS_DIR = Path(os.environ.get("MEMOCMT_DATA_DIR", REPO_ROOT.parent / "shared" / "data")) / "ravdess-a01-a20"

# No model hub is reachable from tests: fail fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    has_cuda = False
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        pass
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU; none is available here")
    for item in items:
        if "requires_cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    if not RAVDESS_DIR.is_dir():
        pytest.skip(f"real RAVDESS speech not found at {RAVDESS_DIR}")
    return RAVDESS_DIR


@pytest.fixture(scope="session")
def speech_clip(ravdess_dir) -> Path:
    """One real 16 kHz utterance: actor 01, angry, strong, 'Kids are talking by the door'."""
    return ravdess_dir / "Actor_01" / "03-01-05-02-01-01-01.flac"


@pytest.fixture(scope="session")
def speech(speech_clip) -> np.ndarray:
    from memocmt.audio import load_audio

    return load_audio(speech_clip)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny randomly initialised HuBERT, wav2vec2 (layer-norm front end) and BERT saved like hub models."""
    from tests.tiny_models import save_tiny_bert, save_tiny_hubert, save_tiny_wav2vec2

    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "hubert": save_tiny_hubert(root / "hubert"),
        "wav2vec2": save_tiny_wav2vec2(root / "wav2vec2"),
        "bert": save_tiny_bert(root / "bert"),
    }
