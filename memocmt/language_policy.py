"""Which transcripts the model reads: classifying from audio alone when the words are in a foreign language.

The text encoder (MiniLM-L6, all-MiniLM-L6-v2) was trained on English sentences, and the fusion head learns
what the text states of the languages it was trained on look like. The transcript of a language the head
never saw gives it states it has no experience of. Measured by the cross-corpus protocol
(training/recipes/cross_corpus.py, benchmarks/results/cross_corpus/): a RAVDESS-only fusion head scores 2.5
points UA below its audio-only twin on Polish speakers (95% paired bootstrap [-4.8, -0.2]) and is less well
calibrated there, while a head trained on English and Polish gains or loses nothing measurable from the text
on either language.

The rule, stored with the weights (MemoCMTConfig.text_languages) and honoured by the ONNX runtime and the live
pipeline:

- `text_languages` lists the languages whose transcripts the head reads: the recipe sets it to the languages
  of the utterances the head was trained on (the manifests' `language` field: RAVDESS and the synthetic
  corpus "en", nEMO "pl"), so no test speaker takes part in the choice;
- an utterance whose language is known (detected by a multilingual ASR with --language auto, or given with
  --language) and not in that list is classified by the late fusion's audio-only members alone, at their own
  temperatures (fusion.EnsembleHead.audio_logits; the ONNX fusion graph's `audio_logits` output);
- an unknown language, or an empty list, reads the transcript as before: nothing says the words are foreign.

Only a late fusion with an audio-only member can fall back (MemoCMTConfig refuses the list otherwise).
"""

from __future__ import annotations

from typing import Iterable


def _field(config, name: str):
    return config.get(name) if isinstance(config, dict) else getattr(config, name)


def has_audio_fallback(config) -> bool:
    """Whether a model (a MemoCMTConfig or its dict) classifies foreign-language utterances from audio alone:
    a late fusion of text-reading and audio-only heads with `text_languages`."""
    return bool(_field(config, "text_languages")) and bool(_field(config, "members")) and \
        _field(config, "modalities") == "both"


def reads_text(text_languages: Iterable[str], language: str | None) -> bool:
    """Whether the transcript of an utterance in `language` ("" or None: unknown) is read."""
    languages = {code.strip().lower() for code in text_languages}
    code = (language or "").strip().lower()
    return not languages or not code or code in languages


def trained_languages(languages: Iterable[str]) -> list[str]:
    """The sorted distinct language codes of the training utterances (unknown ones, "", left out)."""
    return sorted({code.strip().lower() for code in languages if code and code.strip()})
