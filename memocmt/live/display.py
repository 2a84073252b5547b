"""Output: the live terminal view (rich), plain lines, the JSONL writer and saved WAVs.

All file and terminal I/O of the live pipeline is here; the stages only produce
`UtteranceResult`s and a `SessionSummary`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from memocmt.audio import SAMPLE_RATE
from memocmt.live.errors import LiveError
from memocmt.live.hindsight import Revision
from memocmt.live.summary import SessionSummary, UtteranceResult, speaker_name

BAR_WIDTH = 20  # characters of the confidence bar in plain lines
RICH_BAR = 10  # ... and in the live table
HISTORY = 8  # utterances kept on screen


def jsonl_record(result: UtteranceResult, meta: dict, audio_path: str | None = None) -> dict:
    """The fields of one JSONL line: the result, the session's `meta` (device, models), the saved WAV."""
    record = {"type": "utterance", **result.to_dict()}
    record.update(meta)
    record["audio_path"] = audio_path
    return record


class JsonlWriter:
    """One JSON object per utterance, flushed after each line (`-` is stdout)."""

    def __init__(self, path: str, meta: dict):
        self.meta = meta  # device, model, ... added to every line
        self.path = path
        if path == "-":
            self._file: TextIO = sys.stdout
            self._owned = False
        else:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8")
            except OSError as e:
                raise LiveError(f"Cannot write the JSONL file {path}: {e.strerror}.") from e
            self._owned = True

    def write(self, result: UtteranceResult, audio_path: str | None = None) -> None:
        self._line(jsonl_record(result, self.meta, audio_path))

    def write_revision(self, revision: Revision) -> None:
        """A `"type": "revision"` line: an earlier utterance (by `index`) classified again in hindsight."""
        self._line({**revision.to_dict(), **self.meta})

    def _line(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._owned:
            self._file.close()


class AudioSaver:
    """Writes each utterance as a 16 kHz mono WAV in `directory`."""

    def __init__(self, directory: str):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LiveError(f"Cannot create the audio directory {directory}: {e.strerror}.") from e

    def save(self, result: UtteranceResult) -> str | None:
        if result.audio is None:
            return None
        import soundfile as sf

        path = self.directory / f"utterance_{result.index:05d}_{result.start_s:09.2f}s.wav"
        sf.write(str(path), result.audio, SAMPLE_RATE, subtype="PCM_16")
        return str(path)


def confidence_bar(value: float, width: int = BAR_WIDTH) -> str:
    filled = int(round(max(0.0, min(1.0, value)) * width))
    return "█" * filled + "░" * (width - filled)


def result_line(result: UtteranceResult) -> str:
    """One plain line per utterance."""
    t = result.timings_ms
    parts = [f"[{result.start_s:7.2f}-{result.end_s:7.2f}s]"]
    p = result.prediction
    if p is not None and p.speaker is not None:
        parts.append(speaker_name(p.speaker))
    if p is not None:
        runner, runner_p = p.runner_up
        parts.append(f"{p.label} {p.confidence:.2f} (then {runner} {runner_p:.2f})")
    parts.append(repr(result.text) if result.text else "(no transcript)")
    stages = ", ".join(f"{k} {t[k]:.0f}" for k in ("vad_wait", "asr", "emotion", "eos_to_result") if k in t)
    parts.append(f"ms: {stages}")
    return "  ".join(parts)


def revision_line(revision: Revision) -> str:
    """One plain line for a label changed in hindsight."""
    p, before = revision.prediction, revision.previous
    who = f" {speaker_name(p.speaker)}" if p.speaker is not None else ""
    return (f"  #{revision.index}{who} revised in hindsight: {before.label} {before.confidence:.2f} -> "
            f"{p.label} {p.confidence:.2f}")


class PlainView:
    """Lines for logs and pipes (used when the output is not a terminal)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __enter__(self) -> "PlainView":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def started(self, description: str) -> None:
        print(f"listening: {description}", file=self.stream, flush=True)

    def show(self, result: UtteranceResult) -> None:
        print(result_line(result), file=self.stream, flush=True)

    def revise(self, revisions: list[Revision]) -> None:
        for r in revisions:
            if r.changed:
                print(revision_line(r), file=self.stream, flush=True)

    def tick(self, status: dict) -> None:
        """Plain output has no status line."""

    def summary(self, summary: SessionSummary) -> None:
        for line in summary.lines():
            print(line, file=self.stream, flush=True)


class RichView:
    """A live table of recent utterances with a status line, redrawn in place."""

    def __init__(self, stream: TextIO):
        from rich.console import Console

        self.console = Console(file=stream)
        self.history: list[UtteranceResult] = []
        self.revised: dict = {}  # utterance index -> Prediction revised in hindsight
        self.status: dict = {}
        self.description = ""
        self._live = None

    def __enter__(self) -> "RichView":
        from rich.live import Live

        self._live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)
            self._live = None

    def started(self, description: str) -> None:
        self.description = description
        self._refresh()

    def show(self, result: UtteranceResult) -> None:
        self.history = (self.history + [result])[-HISTORY:]
        self._refresh()

    def revise(self, revisions: list[Revision]) -> None:
        """Rows still on screen show the revised label (marked); older ones get a line above the table."""
        shown = {r.index: r for r in self.history}
        for revision in revisions:
            if not revision.changed:
                continue
            if revision.index in shown:
                self.revised[revision.index] = revision.prediction
            else:
                self.console.print(revision_line(revision), highlight=False)
        self._refresh()

    def tick(self, status: dict) -> None:
        self.status = status
        self._refresh()

    def summary(self, summary: SessionSummary) -> None:
        for line in summary.lines():
            self.console.print(line, highlight=False)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(expand=True, show_lines=False)
        table.add_column("time (s)", no_wrap=True, width=11)
        table.add_column("transcript", ratio=1, min_width=20)
        table.add_column("emotion (runner-up)", no_wrap=True, width=RICH_BAR + 16)
        table.add_column("ms", no_wrap=True, width=11)
        for r in self.history:
            p, t = self.revised.get(r.index, r.prediction), r.timings_ms
            emotion = Text("-")
            if p is not None:
                runner, runner_p = p.runner_up
                mark = "*" if r.index in self.revised else ""
                emotion = Text(f"{p.label + mark:<9} {confidence_bar(p.confidence, RICH_BAR)} {p.confidence:.2f}\n"
                               f"({runner} {runner_p:.2f})")
            ms = "\n".join(f"{name} {t[k]:.0f}" for name, k in (("vad", "vad_wait"), ("asr", "asr"), ("emo", "emotion"),
                                                               ("total", "eos_to_result")) if k in t)
            when = f"{r.start_s:.1f}-{r.end_s:.1f}"
            if p is not None and p.speaker is not None:
                when += f"\n{speaker_name(p.speaker)}"
            table.add_row(when, r.text or "(no transcript)", emotion, ms)
        s = self.status
        state = "[bold green]speech[/]" if s.get("in_speech") else "[dim]listening[/]"
        line = Text.from_markup(
            f"{state}  {self.description}  audio {s.get('audio_s', 0.0):.1f} s  lag {s.get('lag_s', 0.0):.2f} s  "
            f"queued {s.get('queued', 0)}  overflows {s.get('overflows', 0)}  (Ctrl-C to stop)"
        )
        return Group(table, line)


def make_view(stream: TextIO, rich: bool | None = None) -> PlainView | RichView:
    """The rich view on a terminal, plain lines otherwise (or as forced by `rich`)."""
    use_rich = stream.isatty() if rich is None else rich
    return RichView(stream) if use_rich else PlainView(stream)

