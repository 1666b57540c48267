"""Typed options of a streamer run, built by the command line (streamer.cli.args) or by any other caller."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamer.app.session import SessionOptions
from streamer.core.config import FinalModelConfig
from streamer.model.beam import DEFAULT_BEAM_WIDTH, DEFAULT_HOTWORD_WEIGHT
from streamer.sinks.desktop import DesktopOptions


@dataclass(frozen=True)
class OutputOptions:
    #: Transcript files, by extension (.txt, .srt, .vtt, .jsonl).
    paths: tuple[str, ...] = ()
    #: Replace existing non-empty files (default: refuse before anything runs).
    overwrite: bool = False


@dataclass(frozen=True)
class DecoderOptions:
    """How finals are decoded: auto (beam search with the language model the checkpoint ships, or --lm; else
    greedy), greedy, or beam search (pyctcdecode) with an optional KenLM and hotwords."""

    kind: str = "auto"
    beam_width: int = DEFAULT_BEAM_WIDTH
    lm: str | None = None
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = DEFAULT_HOTWORD_WEIGHT


@dataclass(frozen=True)
class ControlOptions:
    """The control socket (`streamer ctl`, streamer.app.control)."""

    #: Instance name of the socket; None: no socket (file runs without --name, --no-control).
    name: str | None = None
    #: --start-paused: load and warm up the model, then wait paused for `streamer ctl resume` / SIGUSR1.
    start_paused: bool = False


@dataclass(frozen=True)
class LiveSources:
    """Which live inputs a run records (streamer.app.sources): the microphone, the desktop's audio (the
    default output's monitor), or both side by side on one model, each final labelled."""

    mic: bool = True
    desktop: bool = False
    #: Labels in the text outputs and on the caption screen when both run (the jsonl `source` stays
    #: "mic" / "desktop").
    mic_label: str = "you"
    desktop_label: str = "desktop"
    #: Which sources' finals reach the clipboard, typing and voice commands: mic | desktop | both (a video
    #: must not type into the user's editor).
    dictate_from: str = "mic"

    @property
    def both(self) -> bool:
        return self.mic and self.desktop


@dataclass(frozen=True)
class RunOptions:
    """One run of `streamer`: where audio comes from, how it is shown, where transcripts go."""

    session: SessionOptions = field(default_factory=SessionOptions)
    #: An audio file, "-" for standard input, or a FIFO (None: the microphone).
    file: str | None = None
    #: Headerless signed 16-bit little-endian input at this rate (--raw-rate; None: the file has a header).
    raw_rate: int | None = None
    #: Interleaved channels of raw input (--raw-channels).
    raw_channels: int = 1
    #: File pacing: fast | realtime (None: realtime with the TUI, fast without).
    replay: str | None = None
    #: --offline: decode the whole file at once (the reference decode).
    offline: bool = False
    #: Input device: index or part of its name (None: the default input).
    input_device: str | None = None
    #: Show the live caption screen (only when stdout is a terminal).
    tui: bool = False
    outputs: OutputOptions = field(default_factory=OutputOptions)
    decoder: DecoderOptions = field(default_factory=DecoderOptions)
    desktop: DesktopOptions = field(default_factory=DesktopOptions)
    control: ControlOptions = field(default_factory=ControlOptions)
    #: The live inputs (--mic, --desktop); ignored with --file.
    sources: LiveSources = field(default_factory=LiveSources)
    #: --final-model: Whisper writes the finals (name None: the CTC model does).
    final_model: FinalModelConfig = field(default_factory=FinalModelConfig)

    @property
    def replay_mode(self) -> str:
        return self.replay or ("realtime" if self.tui else "fast")
