"""The ONNX bundle format: file names, manifest schema and version, and the errors around it.

A bundle is a folder of up to three ONNX graphs (audio encoder, text encoder, fusion head),
the tokenizer, a speaker-normalised model's prior statistics and voice signatures, and
`manifest.json`, which records the format name and version, each graph's interface and the
SHA-256 of every other file. The exporter (`memocmt.onnx.export`, PyTorch side) writes this
format and the runtime (`memocmt.runtime`, PyTorch-free) reads it; both import it from here.

This module imports only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

BUNDLE_FORMAT = "memocmt-onnx-bundle"
BUNDLE_VERSION = 1  # bump when the manifest or graph interfaces change incompatibly
MANIFEST_NAME = "manifest.json"
GRAPH_FILES = {"audio": "audio_encoder.onnx", "text": "text_encoder.onnx", "fusion": "fusion.onnx"}
TOKENIZER_FILE = "tokenizer.json"
SPEAKER_PRIOR_FILE = "speaker_prior.npy"  # (2, L, D) prior statistics of a speaker_norm model
VOICES_FILE = "voices.npz"  # voice signatures for live speaker tracking (memocmt.speakers), when the model has them
IR_VERSION_FOR_OPSET = {17: 8, 18: 8, 19: 9, 20: 9}  # the oldest ONNX IR each opset allows; graphs are pinned to it


def graph_interface(stage: str, modalities: str, speaker_norm: str = "",
                    audio_fallback: bool = False) -> tuple[list[str], list[str]]:
    """Input and output names of one graph: the contract between the exporter and the runtime.

    The fusion graph of a speaker_norm model also takes `speaker_stats` (B, 2, L, D), the speaker
    statistics of memocmt.speaker_norm. With `audio_fallback` (a late fusion with `text_languages`:
    memocmt.language_policy) it also outputs `audio_logits`, its audio-only members' prediction."""
    if stage == "audio":
        return ["features", "lengths"], ["states", "out_lengths"]
    if stage == "text":
        return ["input_ids", "attention_mask"], ["states"]
    inputs = []
    if modalities in ("both", "audio"):
        inputs += ["audio_states", "audio_lengths"]
    if modalities in ("both", "text"):
        inputs += ["text_states", "text_lengths"]
    if speaker_norm and speaker_norm != "none" and modalities in ("both", "audio"):
        inputs.append("speaker_stats")
    return inputs, ["logits", "probabilities", *(["audio_logits"] if audio_fallback else [])]


class BundleError(ValueError):
    """A bundle folder that is missing, tampered with, or from another format version."""


class ExportError(RuntimeError):
    """The model cannot be exported as asked."""


class ExportValidationError(ExportError):
    """An exported graph failed verification against PyTorch; no bundle was written."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bundle_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a bundle folder, checked for format name and version."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a MemoCMT ONNX bundle: {MANIFEST_NAME} is missing (run memocmt-export).")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path} is unreadable or not JSON: {e}") from e
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not a {BUNDLE_FORMAT} manifest (format={manifest.get('format')!r}).")
    version = manifest.get("format_version")
    if version != BUNDLE_VERSION:
        newer = isinstance(version, int) and version > BUNDLE_VERSION
        raise BundleError(
            f"{manifest_path} has bundle format version {version!r} but this memocmt reads version {BUNDLE_VERSION}; "
            + ("upgrade memocmt-live." if newer else "export the bundle again with this memocmt.")
        )
    return manifest


def verify_bundle_files(path: str | os.PathLike, manifest: dict) -> None:
    """Check every file listed in the manifest against its SHA-256; raise naming the first bad one."""
    path = Path(path)
    for name, expected in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"Bundle {path} lacks {name}, which its manifest lists; export the bundle again.")
        if sha256_file(file) != expected:
            raise BundleError(
                f"{file} does not match the SHA-256 in {MANIFEST_NAME}; the file was modified or corrupted, "
                "export the bundle again."
            )
