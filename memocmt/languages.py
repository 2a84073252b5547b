"""The spoken-language option shared by every transcription path (`--language auto|en|pl|...`).

"auto" lets a multilingual Whisper model detect the language of each utterance; an English-only
model (tiny.en) can only transcribe English, so it takes "auto" as "en" and refuses any other
language in one sentence instead of producing English-sounding nonsense.
"""

from __future__ import annotations

AUTO = "auto"
ENGLISH = "en"


class LanguageError(ValueError):
    """A language the chosen ASR model cannot transcribe; the message says what to use instead."""


def whisper_language(language: str | None, *, multilingual: bool, model: str) -> str | None:
    """The code to hand Whisper for `language` ("auto"/None/""/a code): None means detect it."""
    code = (language or AUTO).strip().lower()
    if code == AUTO:
        return None if multilingual else ENGLISH
    if not multilingual and code != ENGLISH:
        raise LanguageError(f"The ASR model {model} is English-only and cannot transcribe language {code!r}; "
                            "use a multilingual model (e.g. whisper-base) or --language en.")
    known = whisper_language_codes()
    if known and code not in known:
        raise LanguageError(f"{code!r} is not a language code Whisper knows; use one like en, pl or de, or auto.")
    return code


def whisper_language_codes() -> tuple[str, ...]:
    """Whisper's language codes, from faster-whisper when it is installed (else empty: not checked)."""
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:
        return ()
    return tuple(_LANGUAGE_CODES)
