"""The application's flows: captions of a file or of the microphone through a Session, and the offline
(reference) decode of a file. Everything that can be checked is checked before the model loads (outputs,
dictation tools, beam search, the device), so a mistake costs no wait."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from streamer.app.options import DecoderOptions, RunOptions
from streamer.app.session import Session, SessionOptions
from streamer.audio.source import SourceFactory
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.core.events import FinalEvent
from streamer.core.recognizer import FinalRescorer, FrameModel
from streamer.errors import ConfigError, StreamerError
from streamer.sinks import Sink

if TYPE_CHECKING:  # imported where used: the desktop sink pulls in its tools only when asked for
    from streamer.sinks.desktop import DesktopSink


def stderr_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def status(msg: str) -> None:
    """Progress information for a person watching (stderr is a terminal); errors stay the only line otherwise."""
    if sys.stderr.isatty():
        stderr_line(msg)


def check_decoder(decoder: DecoderOptions) -> None:
    if decoder.kind == "beam":
        from streamer.model.beam import check_available

        check_available(decoder.lm)
    elif decoder.lm:
        raise ConfigError("--lm needs --decoder beam", "add --decoder beam; it needs pip install 'streamer[beam]'")


def prepare_outputs(opts: RunOptions) -> DesktopSink | None:
    """Checks made before the model loads: output paths, beam search, and the desktop sink (clipboard,
    typing, voice commands: tools found and the commands file read now). Returns the desktop sink or None."""
    from streamer.sinks.desktop import build_desktop_sink
    from streamer.sinks.files import check_output_path

    check_decoder(opts.decoder)
    desktop = build_desktop_sink(opts.desktop)
    for p in opts.outputs.paths:
        check_output_path(p, opts.outputs.overwrite)
    return desktop


def open_outputs(opts: RunOptions) -> list[Sink]:
    from streamer.sinks.files import open_output

    sinks: list[Sink] = []
    try:
        for p in opts.outputs.paths:
            sinks.append(open_output(p, opts.outputs.overwrite))
    except StreamerError:
        for s in sinks:
            s.close()
        raise
    return sinks


def final_rescorer(decoder: DecoderOptions, ctc: FrameModel, desktop: DesktopSink | None) -> FinalRescorer | None:
    """Beam search for finals when asked for; None keeps greedy decoding."""
    hotwords = [*decoder.hotwords, *(desktop.hotwords if desktop else ())]
    if decoder.kind != "beam":
        if decoder.hotwords:
            stderr_line("streamer: note: --hotwords only bias beam search (--decoder beam); greedy decoding ignores them")
        return None
    from streamer.model.beam import BeamRescorer

    rescorer = BeamRescorer(ctc.vocabulary, lm_path=decoder.lm, hotwords=hotwords, beam_width=decoder.beam_width,
                            hotword_weight=decoder.hotword_weight)
    status(f"streamer: beam search of finals (width {decoder.beam_width}"
           + (f", language model {decoder.lm}" if decoder.lm else "") + f", {len(rescorer.hotwords)} hotwords)")
    return rescorer


def run_offline(opts: RunOptions) -> int:
    """The whole file in one forward pass: the reference decode (streamer.model.reference)."""
    from streamer.audio.files import probe, read_16k
    from streamer.core.decoding import GreedyDecoder
    from streamer.core.stitching import collapse
    from streamer.model import load_model, reference_decode
    from streamer.sinks.stdout import STDOUT_FAILED_EXIT, StdoutFinals

    assert opts.file is not None
    info = probe(opts.file)
    desktop = prepare_outputs(opts)
    ctc = load_model(opts.session.config.model, warmup=False)
    audio = read_16k(info.path)
    ref = reference_decode(ctc.model, ctc.processor, audio)
    text = ref.text
    rescorer = final_rescorer(opts.decoder, ctc, desktop)
    if rescorer is not None:
        text = rescorer(ref.logits)
    decoder = GreedyDecoder(ctc.vocabulary, ctc.geometry.frame_s)
    words = decoder.words(collapse(ref.labels, 0, ctc.vocabulary.blank_id).spans)
    end_s = len(audio) / MODEL_SAMPLE_RATE
    final = FinalEvent(audio_time_s=end_s, wall_time_s=time.time(), segment_id=0, text=text, words=words,
                       start_s=0.0, end_s=round(end_s, 3))
    stdout = StdoutFinals()
    stdout.line(text)
    for sink in open_outputs(opts) + ([desktop] if desktop else []):
        sink.handle(final)
        sink.close()
    return STDOUT_FAILED_EXIT if stdout.failed is not None else 0


def run_file(opts: RunOptions) -> int:
    """Captions of a file, replayed as fast as the pipeline goes or paced like a microphone."""
    from streamer.audio.files import probe
    from streamer.audio.replay import FileReplay

    assert opts.file is not None
    info = probe(opts.file)
    mode = opts.replay_mode
    header = f"file {info.path.name} ({info.sample_rate} Hz, {info.channels} ch, {info.duration_s:.1f} s, replay {mode})"
    return run_captions(opts, lambda ring, stop: FileReplay(info.path, ring, mode, stop), header,
                        catch_up=mode != "fast")


def run_live(opts: RunOptions) -> int:
    """Captions of the microphone: the device is checked before the model loads."""
    from streamer.audio.capture import Capture, header_text
    from streamer.audio.devices import CaptureSettings, check_settings, resolve_input_device

    settings = check_settings(resolve_input_device(opts.input_device))

    def announce(s: CaptureSettings) -> None:
        stderr_line(f"streamer: listening on {s.device.label} @ {s.sample_rate_hz} Hz (Ctrl+C to stop)")

    buffer = opts.session.config.buffer
    on_ready = None if opts.tui else announce
    return run_captions(opts, lambda ring, stop: Capture(settings, ring, stop, buffer, on_ready), header_text(settings),
                        catch_up=True)


def _on_sigterm(stop: Callable[[], None]) -> None:
    """SIGTERM, and SIGHUP (the terminal was closed), stop like Ctrl+C: the utterance in progress is
    finalised and every output written."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop())
        if hasattr(signal, "SIGHUP"):  # not on Windows
            signal.signal(signal.SIGHUP, lambda *_: stop())


def run_captions(opts: RunOptions, source: SourceFactory, header: str, catch_up: bool) -> int:
    """Load the model, run one Session to the end of the stream (or Ctrl+C / SIGTERM / q), show it on the
    caption screen or as plain lines, and report what was lost. Every output is written on every exit path."""
    from streamer.model import load_model
    from streamer.sinks.stdout import STDOUT_FAILED_EXIT, StdoutFinals

    desktop = prepare_outputs(opts)
    config = opts.session.config
    status(f"streamer: loading {config.model.name} ...")
    ctc = load_model(config.model)
    stdout = None if opts.tui else StdoutFinals()
    sinks: list[Sink] = ([stdout] if stdout is not None else []) + open_outputs(opts) + ([desktop] if desktop else [])
    session = Session(ctc, source, SessionOptions(config, catch_up=catch_up), sinks=sinks,
                      final_rescorer=final_rescorer(opts.decoder, ctc, desktop))
    ui = None
    if opts.tui:
        from streamer.ui import CaptionUI

        ui = CaptionUI(model=ctc.description, audio=header, session=session)
        session.add_handler(ui.handle)
        if desktop is not None:  # no stray stderr lines on the UI's screen: shown by it, or printed after it
            desktop.notify = ui.notify
    else:
        status(f"streamer: {ctc.description}; {header}")
    _on_sigterm(session.request_stop)
    try:
        session.start()
        if ui is not None:
            ui.run()
        else:
            _wait(session, show_progress=session.source.mode == "fast" and sys.stderr.isatty())
    except KeyboardInterrupt:
        pass  # stop below: the pending segment is flushed as a final and every output written
    finally:
        session.stop()
    session.raise_errors()
    for line in session.warnings():
        stderr_line(f"streamer: {line}")
    if stdout is not None and stdout.failed is not None:
        return STDOUT_FAILED_EXIT  # said when it happened; every other output is complete
    return 0  # Ctrl+C / SIGTERM / SIGHUP are a normal way to stop: everything was flushed and written


def _wait(session: Session, show_progress: bool) -> None:
    """Until the stream ends or a stop is requested; with a progress bar for a fast file replay."""
    def ended() -> bool:
        return session.wait(0.2) or session.stopping.is_set()

    if not show_progress:
        while not ended():
            pass
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    total = (session.source.total_samples or 0) / MODEL_SAMPLE_RATE
    with Progress(TextColumn("transcribing"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replay", total=total)
        while not ended():
            progress.update(task, completed=session.processed_s)
