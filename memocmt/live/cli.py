"""`memocmt-live`: speech emotion recognition from a microphone, a file or stdin.

Every problem a user can fix (no microphone, no PortAudio, a bad rate, a missing file or
model) ends the program with one sentence on stderr and exit status 2; the session's own
end (end of input, Ctrl-C) prints a summary and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from memocmt.audio import AudioError
from memocmt.denoise import DENOISERS
from memocmt.live.denoise import DEFAULT_TARGETS
from memocmt.live.errors import LiveError

if TYPE_CHECKING:
    from memocmt.live.asr import AsrConfig
    from memocmt.live.pipeline import BundleEmotionModel

log = logging.getLogger("memocmt")

PROG = "memocmt-live"
DEVICES = ["auto", "cpu", "cuda"]
COMPUTE_TYPES = ["auto", "int8", "int8_float16", "int8_float32", "float16", "float32"]

# The options memocmt-live and memocmt-serve share (`add_shared_option`): name, type, choices and
# default are set here once; a program that words the help for its own users passes its own.
SHARED_OPTIONS: dict[str, dict] = {
    "--model": {"metavar": "PATH"},
    "--no-emotion": {"action": "store_true"},
    "--emotion-device": {"choices": DEVICES, "default": "auto"},
    "--emotion-threads": {"type": int, "default": 0},
    "--asr-model": {},
    "--asr-device": {"choices": DEVICES, "default": "auto"},
    "--compute-type": {"choices": COMPUTE_TYPES, "default": "auto"},
    "--asr-threads": {"type": int, "default": 0, "help": "CPU threads for Whisper (default: one per core, at most 4)"},
    "--asr-context": {"choices": ["short", "full"], "default": "short"},
    "--vad": {"choices": ["webrtc", "silero"], "default": "webrtc"},
    "--hangover-ms": {"type": int, "default": 300, "help": "silence that ends an utterance (default: 300)"},
    "--verbose": {"action": "count", "default": 0, "help": "log more (-v: info, -vv: debug)"},
}


def add_shared_option(group, *names: str, **kwargs) -> None:
    """Add the shared option whose long name is `names[-1]` to an argparse parser or group;
    `kwargs` (the program's own help, say) replace what SHARED_OPTIONS sets."""
    group.add_argument(*names, **{**SHARED_OPTIONS[names[-1]], **kwargs})


@dataclass
class ModelOptions:
    """Which models run, and where: memocmt-live's for its session, memocmt-serve's shared by all of its sessions."""

    model: str | None = None  # bundle directory (None: the runtime's default bundle)
    no_emotion: bool = False
    emotion_device: str = "auto"
    emotion_threads: int = 0  # ONNX Runtime intra-op threads (0: the runtime's default)
    adapt_window: int = 20
    asr_model: str | None = None
    asr_device: str = "auto"
    compute_type: str = "auto"
    asr_threads: int = 0
    beam_size: int = 1
    language: str | None = None
    asr_context: str = "short"
    asr_context_pad: float = 1.0  # seconds of silence appended for short-context decoding

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelOptions:
        """The fields a program has options for, from its parsed arguments; the others keep their defaults."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def asr_config(self, context: str | None = None, bundle: Any = None, sticky_language: bool = False) -> AsrConfig:
        """The `memocmt.live.asr.AsrConfig` of these options, in `context` (None: `asr_context`). Without
        --asr-model, the ASR is the built-in Whisper whose encoder the emotion `bundle` uses (so the two share
        one encoder pass), else the offline tiny.en. `sticky_language`: see AsrConfig (one session per transcriber)."""
        from memocmt.live.asr import AsrConfig, asr_model_for

        return AsrConfig(
            model=self.asr_model or asr_model_for(bundle), device=self.asr_device, compute_type=self.compute_type,
            beam_size=self.beam_size, language=self.language, cpu_threads=self.asr_threads,
            context=context or self.asr_context, context_pad_s=self.asr_context_pad, sticky_language=sticky_language,
        )

    def load_emotion(self, track_speakers: bool = True, speakers: str = "auto",
                     hindsight: bool = True) -> BundleEmotionModel:
        """Load the emotion model (memocmt.live.pipeline.load_emotion_model); raises LiveError with one sentence."""
        from memocmt.live.pipeline import load_emotion_model

        device = None if self.emotion_device == "auto" else self.emotion_device
        return load_emotion_model(self.model, device, self.emotion_threads or None, self.adapt_window,
                                  track_speakers=track_speakers, speakers=speakers, hindsight=hindsight)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Realtime speech emotion recognition: microphone/file -> VAD -> Whisper -> MemoCMT.",
    )
    src = p.add_argument_group("input")
    src.add_argument("--list-devices", action="store_true", help="list the audio input devices and exit")
    src.add_argument("--device", help="input device: index or part of its name (default: the system default)")
    src.add_argument("--capture-rate", type=int, help="capture at this rate in Hz (default: 16000 if the device supports it, else its default rate)")
    src.add_argument("--input", metavar="FILE", help="read an audio file instead of the microphone; '-' reads raw int16 mono PCM from stdin")
    src.add_argument("--server", metavar="URL",
                     help="stream the input to a memocmt-serve server (ws://HOST:PORT/ws[?token=...]) instead of running the models here")
    src.add_argument("--input-rate", type=int, default=16000, help="sample rate of --input - in Hz (default: 16000)")
    pace = src.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=None,
                      help="release file/stdin audio at real-time speed, as a microphone would (default for files)")
    pace.add_argument("--fast", dest="realtime", action="store_false",
                      help="process file/stdin audio as fast as possible, losing nothing (default for stdin)")

    noise = p.add_argument_group("noisy rooms")
    noise.add_argument("--denoise", choices=DENOISERS, default="off",
                       help="enhance the stream before recognition: dfn3 is DeepFilterNet3 (needs the noise extra); "
                            "off passes it on as captured (default: off)")
    noise.add_argument("--denoise-for", default=",".join(DEFAULT_TARGETS), metavar="STAGES",
                       help="which stages hear the enhanced signal with --denoise: any of vad,asr,emotion "
                            f"(default: {','.join(DEFAULT_TARGETS)}; the others hear the stream as captured)")

    vad = p.add_argument_group("voice activity detection")
    add_shared_option(vad, "--vad", help="VAD model (silero is more robust in noise; default: webrtc)")
    vad.add_argument("--vad-aggressiveness", type=int, choices=[0, 1, 2, 3], default=3, help="webrtcvad aggressiveness, 3 rejects most non-speech: in babble it hears far more utterances "
                     "apart (default: 3)")
    vad.add_argument("--vad-frame-ms", type=int, choices=[10, 20, 30], default=30, help="webrtcvad frame length (default: 30)")
    vad.add_argument("--vad-threshold", type=float, default=0.5, help="silero speech probability threshold (default: 0.5)")
    vad.add_argument("--pre-roll-ms", type=int, default=300, help="audio kept before speech starts (default: 300)")
    add_shared_option(vad, "--hangover-ms")
    vad.add_argument("--min-speech-ms", type=int, default=250, help="drop utterances with less speech (default: 250)")
    vad.add_argument("--max-utterance-s", type=float, default=15.0, help="force-split longer utterances (default: 15)")
    vad.add_argument("--speculate-ms", type=int, default=120,
                     help="start recognising after this much silence, before the hangover ends; 0 turns it off (default: 120)")

    asr = p.add_argument_group("speech recognition")
    add_shared_option(asr, "--asr-model", help="whisper-tiny.en, whisper-base (multilingual, from the models extra), a faster-whisper "
                      "model size (e.g. base.en) or a local directory (default: offline tiny.en)")
    add_shared_option(asr, "--asr-device", help="where Whisper runs (default: auto)")
    add_shared_option(asr, "--compute-type", help="CTranslate2 compute type (default: int8 on CPU, float16 on CUDA)")
    asr.add_argument("--beam-size", type=int, default=1, help="Whisper beam size; 1 is greedy and fastest (default: 1)")
    asr.add_argument("--language", default="auto", metavar="auto|en|pl|...",
                     help="spoken language: auto detects it per utterance with a multilingual model (JSONL 'language'); "
                          "English-only (.en) models take en only (default: auto)")
    add_shared_option(asr, "--asr-threads")
    add_shared_option(asr, "--asr-context",
                      help="short: decode from the emotion model's Whisper encoder pass at the utterance's own length "
                           "(~4x less ASR compute; falls back to full when that encoder is not Whisper's); "
                           "full: Whisper's standard 30 s window (default: short)")
    asr.add_argument("--asr-context-pad", type=float, default=1.0, metavar="S",
                     help="silence appended to an utterance for short-context decoding (default: 1.0)")

    emo = p.add_argument_group("emotion")
    add_shared_option(emo, "--model", help="exported MemoCMT bundle directory (default: the runtime's default bundle)")
    add_shared_option(emo, "--no-emotion", help="transcripts only, no emotion model")
    add_shared_option(emo, "--emotion-device", help="ONNX Runtime device for the emotion model (default: auto)")
    emo.add_argument("--adapt-window", type=int, default=20, metavar="N",
                     help="a speaker-normalised model adapts to each voice from its last N utterances (default: 20)")
    emo.add_argument("--speakers", choices=["auto", "ge2e", "one"], default="auto",
                     help="auto: tell the voices of several people apart and adapt to each one (a model with voice "
                          "signatures; results name the voice S1, S2, ...); ge2e: the same with GE2E speaker embeddings "
                          "(the voice extra: keeps several people apart better, splits one person more often); "
                          "one: adapt to everyone as one voice (default: auto)")
    emo.add_argument("--no-hindsight", action="store_true",
                     help="do not classify a voice's first utterances again once it is well known (by default they are, "
                          "when its window is full or the session ends: 'revised in hindsight' lines, JSONL lines of "
                          "\"type\": \"revision\", and the summary counts the revised labels)")
    add_shared_option(emo, "--emotion-threads",
                      help="CPU threads for the emotion model (default 0: one per physical core, at most 4)")

    out = p.add_argument_group("output")
    out.add_argument("--jsonl", metavar="PATH", help="append one JSON object per utterance to PATH ('-': stdout; the view then goes to stderr)")
    out.add_argument("--save-audio", metavar="DIR", help="save each utterance as a WAV file in DIR")
    out.add_argument("--plain", action="store_true", help="print plain lines even on a terminal")
    out.add_argument("--max-lag-s", type=float, default=3.0, help="drop the oldest audio when capture falls this far behind (default: 3)")
    add_shared_option(out, "-v", "--verbose")
    return p


def cli(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit status (and exits with it when run as a script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input is None and args.realtime is not None:
        parser.error("--realtime and --fast apply to --input only")
    if args.input is not None and (args.device is not None or args.capture_rate is not None):
        parser.error("--device and --capture-rate apply to the microphone, not to --input")
    if args.no_emotion and args.model:
        parser.error("--model and --no-emotion cannot be used together")
    if args.adapt_window < 1:
        parser.error("--adapt-window must be at least 1 utterance")
    if args.denoise != "off" and args.server:
        parser.error("--denoise runs here; with --server the server hears the stream as captured")
    configure_logging(PROG, args.verbose)
    try:
        return _run(args)
    except (LiveError, AudioError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while models load, before the session starts
        print(f"{PROG}: interrupted before the session started.", file=sys.stderr)
        return 130


def configure_logging(prog: str, verbosity: int) -> None:
    """The program's own log lines go to stderr, each prefixed with `prog`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    log.propagate = False


def _list_devices() -> int:
    from memocmt.live.capture import import_sounddevice, input_devices

    sd = import_sounddevice()
    devices = input_devices()
    if not devices:
        print("No audio input devices found.")
        return 0
    try:
        default = sd.query_devices(kind="input")["name"]
    except (sd.PortAudioError, ValueError):
        default = None
    for d in devices:
        mark = "*" if d["name"] == default else " "
        print(f"{mark} {d['index']:3d}  {d['name']}  ({d['max_input_channels']} ch, default {d['default_samplerate']:.0f} Hz)")
    return 0


def _make_source(args):
    from memocmt.live import capture

    if args.input == "-":
        return capture.StdinSource(args.input_rate, realtime=bool(args.realtime))
    if args.input is not None:
        return capture.FileSource(args.input, realtime=args.realtime is not False)
    if args.capture_rate is not None:
        capture.check_rate(args.capture_rate, "--capture-rate")
    info = capture.resolve_device(args.device)  # fail on a bad device before loading models or connecting
    capture.choose_rate(info["index"], info["default_samplerate"], args.capture_rate)
    return capture.MicrophoneSource(args.device, args.capture_rate)


def _run(args) -> int:
    if args.list_devices:
        return _list_devices()
    if args.server:
        from memocmt.serve.client import run_remote

        return run_remote(args, _make_source(args))
    from memocmt.live.asr import Transcriber
    from memocmt.live.capture import MicrophoneSource
    from memocmt.live.denoise import make_denoise_stage, parse_targets
    from memocmt.live.display import AudioSaver, JsonlWriter, make_view
    from memocmt.live.pipeline import Pipeline, PipelineConfig
    from memocmt.live.vad import Segmenter, VadConfig, make_classifier

    if args.beam_size < 1:
        raise LiveError(f"--beam-size must be at least 1, not {args.beam_size}.")
    vad_config = VadConfig(
        backend=args.vad, aggressiveness=args.vad_aggressiveness, frame_ms=args.vad_frame_ms,
        threshold=args.vad_threshold, pre_roll_ms=args.pre_roll_ms, hangover_ms=args.hangover_ms,
        min_speech_ms=args.min_speech_ms, max_utterance_s=args.max_utterance_s, speculate_ms=args.speculate_ms,
    )
    vad_config.validate()
    denoise = make_denoise_stage(args.denoise, parse_targets(args.denoise_for))  # before the models: a missing wheel fails fast
    source = _make_source(args)
    live = isinstance(source, MicrophoneSource) or bool(getattr(source, "realtime", False))
    segmenter = Segmenter(make_classifier(vad_config), vad_config)
    options = ModelOptions.from_args(args)
    emotion = None
    if not args.no_emotion:
        emotion = options.load_emotion(track_speakers=args.speakers != "one", speakers=args.speakers,
                                       hindsight=not args.no_hindsight)
        if args.speakers != "one" and emotion.adapter is not None and not emotion.tracks_speakers:
            log.info("this model has no voice signatures: every voice shares one adaptation window")
    transcriber = Transcriber(options.asr_config(bundle=emotion.bundle if emotion is not None else None,
                                                 sticky_language=True))  # this process is one session
    if emotion is not None:
        transcriber.attach_encoder(emotion.bundle.whisper_encoder())
    transcriber.warm_up()

    pipeline = Pipeline(source, segmenter, transcriber, emotion, PipelineConfig(live=live, max_lag_s=args.max_lag_s),
                        denoise=denoise)
    saver = AudioSaver(args.save_audio) if args.save_audio else None
    view_stream = sys.stderr if args.jsonl == "-" else sys.stdout
    view = make_view(view_stream, rich=False if args.plain else None)
    meta = {"device": None, "asr_model": transcriber.model_name, "asr_language": args.language,
            "model": getattr(emotion, "name", None),
            "asr_context": transcriber.context,
            "denoise": args.denoise, "denoise_for": list(denoise.targets) if denoise else [], "speaker_tracking": bool(emotion is not None and emotion.tracks_speakers)}
    writer = JsonlWriter(args.jsonl, meta) if args.jsonl else None
    pipeline.start()  # opens the device: errors surface here
    meta["device"] = source.description  # known once the device is open
    interrupts = 0

    def on_signal(signum, _frame) -> None:
        # Runs on the main thread between bytecodes: only flip the pipeline's flags here.
        nonlocal interrupts
        interrupts += 1
        if signum == signal.SIGTERM:
            pipeline.stop("terminated")
        elif interrupts == 1:
            pipeline.stop("interrupted")  # finish the utterance in progress, then end
        else:
            pipeline.abort()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    def revise(revisions) -> None:
        if writer:
            for revision in revisions:
                writer.write_revision(revision)
        view.revise(revisions)

    with view:
        view.started(source.description)
        for result in pipeline.results(idle=lambda: view.tick(pipeline.status())):
            audio_path = saver.save(result) if saver else None
            if writer:
                writer.write(result, audio_path)
            view.show(result)
            revise(result.revisions)
        revise(pipeline.final_revisions)
    if writer:
        writer.close()
    view.summary(pipeline.session_summary())
    if pipeline.error is not None:
        print(f"{PROG}: {pipeline.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
