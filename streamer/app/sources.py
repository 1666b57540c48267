"""The microphone and the desktop's audio side by side (`streamer --mic --desktop`): two Sessions over ONE
loaded model, each final labelled with its source.

Each source has its own Session (capture -> ring -> worker -> Recognizer) over its own view of the model
(`CTCModel.view()`: its own feature-reuse state; the model is called under the model's FairLock, so the two
workers' windows take turns, in the order they asked). Dropped samples, gaps and lag are each session's own
and shown per source. The outputs (.txt/.srt/.vtt/.jsonl, plain lines) are shared: each session reaches them
through a SourceTap (streamer.sinks.labels) that adds its label and holds one lock. The clipboard, typing and
voice commands hear only the sources in `LiveSources.dictate_from` (the microphone by default).

A SessionGroup drives both as one (the caption screen's Controls): pause, stop, and the end of the run when
either source ends (a device lost): the other is stopped too, so every output is complete and the exit code
says what happened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamer.app.options import RunOptions
from streamer.app.session import Session, SessionOptions
from streamer.app.worker import notice_printer
from streamer.audio.ringbuffer import RingBuffer
from streamer.audio.source import SourceFactory
from streamer.core.config import check_frame_grid
from streamer.errors import ConfigError, StreamerError
from streamer.sinks import Sink
from streamer.sinks.labels import SourceLabel, SourceTap

if TYPE_CHECKING:
    from streamer.app.control import ControlServer

#: How often the group looks whether one of its sessions has ended.
GROUP_POLL_S = 0.1


@dataclass(frozen=True)
class SourceInput:
    """One live input of the run: how its audio is captured, its header text and its label."""

    label: SourceLabel
    factory: SourceFactory
    header: str
    #: Its finals reach the clipboard, typing and voice commands.
    dictates: bool


class SessionGroup:
    """Several sessions run as one (streamer.ui.Controls): stop and pause act on all; `finished` is set when
    all have finished; when one ends on its own (its device was lost), the others are asked to stop."""

    def __init__(self, sessions: Sequence[Session]) -> None:
        self.sessions = list(sessions)
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self._paused = False
        self._watch = threading.Thread(target=self._run, name="session-group", daemon=True)

    def start(self) -> SessionGroup:
        started: list[Session] = []
        try:
            for session in self.sessions:
                session.start()
                started.append(session)
        except BaseException:
            for session in started:
                session.stop()
            self.finished.set()
            raise
        self._watch.start()
        return self

    def _run(self) -> None:
        while not all(s.finished.is_set() for s in self.sessions):
            if not self.stopping.is_set() and any(s.finished.is_set() or s.stopping.is_set() for s in self.sessions):
                self.request_stop()  # one source ended (or was stopped by a signal): the run ends
            self.finished.wait(GROUP_POLL_S)
        self.finished.set()

    def request_stop(self) -> None:
        self.stopping.set()
        for session in self.sessions:
            session.request_stop()

    def stop(self) -> None:
        self.request_stop()
        for session in self.sessions:
            session.stop()
        self.finished.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def toggle_pause(self) -> bool:
        self._paused = not self._paused
        for session in self.sessions:
            if self._paused:
                session.pause()
            else:
                session.resume()
        return self._paused

    def pause(self) -> None:
        if not self._paused:
            self.toggle_pause()

    def resume(self) -> None:
        if self._paused:
            self.toggle_pause()


def labelled_warning(label: SourceLabel, write: Callable[[str], None]) -> Callable[[str], None]:
    """'streamer: warning: MESSAGE' -> 'streamer: warning: desktop: MESSAGE'."""
    def labelled(line: str) -> None:
        write(f"streamer: warning: {label.label}: {line.removeprefix('streamer: warning: ')}")
    return labelled


def live_inputs(opts: RunOptions) -> list[SourceInput]:
    """The microphone (--input-device, or the default input) and the default output's monitor, both checked
    before the model loads; one line when they are the same device or either cannot be opened."""
    from streamer.app.run import stderr_line
    from streamer.audio.capture import Capture, header_text
    from streamer.audio.devices import CaptureSettings, check_settings, list_input_devices, resolve_input_device
    from streamer.audio.monitor import resolve_desktop_device

    devices = list_input_devices()
    mic = check_settings(resolve_input_device(opts.input_device, devices))
    desktop = check_settings(resolve_desktop_device(devices))
    if mic.device.pulse_source is not None and mic.device.pulse_source == desktop.device.pulse_source:
        raise ConfigError(f"--input-device {opts.input_device} is the desktop audio itself ({mic.device.pulse_source})",
                          "pick a microphone with --input-device, or drop --mic to caption the desktop only")
    src = opts.sources
    buffer = opts.session.config.buffer
    out = []
    for settings, label, dictates in (
            (mic, SourceLabel("mic", src.mic_label), src.dictate_from in ("mic", "both")),
            (desktop, SourceLabel("desktop", src.desktop_label), src.dictate_from in ("desktop", "both"))):
        def announce(s: CaptureSettings, label: SourceLabel = label) -> None:
            stderr_line(f"streamer: listening on {s.device.label} @ {s.sample_rate_hz} Hz for {label.label} "
                        "(Ctrl+C to stop)")

        on_ready = None if opts.tui else announce

        def factory(ring: RingBuffer, stop: threading.Event, settings: CaptureSettings = settings,
                    on_ready: Callable[[CaptureSettings], None] | None = on_ready) -> Capture:
            return Capture(settings, ring, stop, buffer, on_ready)

        out.append(SourceInput(label, factory, f"{label.label} = {header_text(settings)}", dictates))
    return out


def run_sources(opts: RunOptions, inputs: Sequence[SourceInput]) -> int:
    """Load the model once, run one Session per input over it until Ctrl+C / SIGTERM / q or a source ends,
    show them as labelled lanes (or labelled plain lines), and report what each lost. `streamer ctl` (and
    SIGUSR1) pause and resume them together."""
    from streamer.app.run import open_control, stderr_line

    control = open_control(opts, stderr_line)  # the name is claimed before the model loads
    try:
        return _run_sources(opts, inputs, control)
    finally:
        if control is not None:
            control.close()


def _run_sources(opts: RunOptions, inputs: Sequence[SourceInput], control: ControlServer | None) -> int:
    from streamer.app.run import (
        _on_sigterm,
        _on_sigusr1,
        announce_control,
        attach_control,
        final_rescorer,
        load_final_model,
        open_outputs,
        prepare_outputs,
        status,
        stderr_line,
    )
    from streamer.model import load_model
    from streamer.sinks.stdout import STDOUT_FAILED_EXIT, StdoutFinals

    desktop_sink = prepare_outputs(opts)
    config = opts.session.config
    status(f"streamer: loading {config.model.name} ...")
    ctc = load_model(config.model)
    check_frame_grid(config.window.hop_ms, config.window.lookahead_ms, ctc.geometry.frame_s * 1000)
    final_model = load_final_model(opts, str(ctc.device))  # one Whisper for every input's finals (--final-model)
    stdout = None if opts.tui else StdoutFinals()
    shared: list[Sink] = ([stdout] if stdout is not None else []) + open_outputs(opts)
    lock = threading.Lock()
    header = " · ".join(i.header for i in inputs)
    sessions = []
    for inp in inputs:
        sinks: list[Sink] = [SourceTap(s, inp.label, lock) for s in shared]
        if desktop_sink is not None and inp.dictates:
            sinks.append(SourceTap(desktop_sink, inp.label, lock))
        sessions.append(Session(ctc.view(), inp.factory, SessionOptions(config, catch_up=True), sinks=sinks,
                                final_rescorer=final_rescorer(opts.decoder, ctc, desktop_sink, final_model is not None),
                                final_model=final_model, final_hotwords=opts.decoder.hotwords))
    group = SessionGroup(sessions)
    ui = None
    if opts.tui:
        from streamer.ui import CaptionUI

        ui = CaptionUI(model=ctc.description, audio=header, session=group,
                       lanes=tuple(i.label.label for i in inputs))
        for inp, session in zip(inputs, sessions):
            session.add_handler(ui.lane_handler(inp.label.label))
        if desktop_sink is not None:
            desktop_sink.notify = ui.notify
    else:
        status(f"streamer: {ctc.description}; {header}")
        for inp, session in zip(inputs, sessions):
            session.add_handler(notice_printer(labelled_warning(inp.label, stderr_line)))
    _on_sigterm(group.request_stop)
    _on_sigusr1(group.toggle_pause)
    if opts.control.start_paused:
        group.pause()
    if control is not None:
        attach_control(control, group, sessions, ctc.description, tuple(i.header for i in inputs))
    if ui is None and (control is not None or opts.control.start_paused):
        announce_control(control, group.paused)
    try:
        group.start()
        if ui is not None:
            ui.run()
        else:
            while not (group.finished.wait(0.2) or group.stopping.is_set()):
                pass
    except KeyboardInterrupt:
        pass  # stop below: each pending segment is flushed as a final and every output written
    finally:
        group.stop()
        for sink in [*shared, *([desktop_sink] if desktop_sink is not None else [])]:
            sink.close()
    errors: list[BaseException] = []
    for inp, session in zip(inputs, sessions):
        for line in session.warnings():
            stderr_line(f"streamer: warning: {inp.label.label}: {line.removeprefix('warning: ')}")
        errors.extend(e for e in session.errors() if not any(e is seen for seen in errors))
    for extra in errors[1:]:
        stderr_line(f"streamer: error: {extra.one_line() if isinstance(extra, StreamerError) else extra}")
    if errors:
        raise errors[0]
    if stdout is not None and stdout.failed is not None:
        return STDOUT_FAILED_EXIT
    return 0
