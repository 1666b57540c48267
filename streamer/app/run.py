"""The application's flows: captions of a file or of the microphone through a Session, and the offline
(reference) decode of a file. Everything that can be checked is checked before the model loads (outputs,
dictation tools, beam search, the device), so a mistake costs no wait."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streamer.app.options import DecoderOptions, RunOptions
from streamer.app.session import Session, SessionOptions
from streamer.app.worker import notice_printer
from streamer.audio.source import SourceFactory
from streamer.core.config import MODEL_SAMPLE_RATE, check_frame_grid
from streamer.core.events import FinalEvent
from streamer.core.recognizer import FinalRescorer, FrameModel
from streamer.errors import ConfigError, MissingDependencyError, OutOfMemory, StreamerError
from streamer.sinks import Sink

if TYPE_CHECKING:  # imported where used: the desktop sink pulls in its tools only when asked for
    from streamer.app.control import ControlServer, ControlTarget
    from streamer.audio.files import AudioInput
    from streamer.model.language_model import LanguageModelFiles
    from streamer.model.whisper import WhisperFinalModel
    from streamer.sinks.desktop import DesktopSink

#: Exit code of a file run interrupted with Ctrl+C: the outputs hold everything up to then, not the rest.
INTERRUPTED_EXIT = 130
#: Exit code of a run that transcribed only part of its input (a truncated file) or lost standard output.
PARTIAL_EXIT = 1


def stderr_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def status(msg: str) -> None:
    """Progress information for a person watching (stderr is a terminal); errors stay the only line otherwise."""
    if sys.stderr.isatty():
        stderr_line(msg)


def ships_language_model(model_name: str) -> bool:
    """Whether a local model folder (or the demo model) has a language_model/ folder: known before loading.
    A hub model is known only once fetched; a bad name is load_model's to report."""
    from streamer.model.language_model import find_language_model
    from streamer.model.loading import resolve_source

    try:
        return find_language_model(resolve_source(model_name).path) is not None
    except StreamerError:
        return False


def check_decoder(decoder: DecoderOptions, model_name: str | None = None) -> None:
    if not math.isfinite(decoder.hotword_weight):
        raise ConfigError(f"--hotword-weight must be a finite number, not {decoder.hotword_weight}", "give a number")
    if decoder.beam_width < 1:
        raise ConfigError(f"--beam-width must be at least 1, not {decoder.beam_width}", "the default is a good start")
    if any(not h.strip() for h in decoder.hotwords):
        raise ConfigError("an empty hotword was given", "separate hotwords with commas, e.g. --hotwords \"alpha,beta\"")
    if decoder.kind == "beam" or decoder.lm:
        if decoder.kind == "greedy":
            raise ConfigError("--lm needs beam search, and --decoder greedy turns it off",
                              "drop --decoder greedy; beam search needs pip install 'streamer[beam]'")
        from streamer.model.beam import check_available

        # --decoder beam with the model's own LM needs kenlm too: said now, not after the model loads
        check_available(decoder.lm, decoder.kind == "beam" and model_name is not None and ships_language_model(model_name))


def prepare_outputs(opts: RunOptions) -> DesktopSink | None:
    """Checks made before the model loads: output paths, beam search, and the desktop sink (clipboard,
    typing, voice commands: tools found and the commands file read now). Returns the desktop sink or None."""
    from streamer.sinks.desktop import build_desktop_sink
    from streamer.sinks.files import check_output_path

    check_decoder(opts.decoder, opts.session.config.model.name)
    check_final_model(opts)
    desktop = build_desktop_sink(opts.desktop)
    for p in opts.outputs.paths:
        check_output_path(p, opts.outputs.overwrite)
    return desktop


def check_final_model(opts: RunOptions) -> None:
    """--final-model: the folder or name resolves and faster-whisper is installed (before anything loads)."""
    final = opts.final_model
    if final.name is None:
        return
    if opts.offline:
        raise ConfigError("--final-model works on streamed utterances, not --offline", "drop one of them")
    final.validate()
    from streamer.errors import require
    from streamer.model.whisper import resolve_final_model

    resolve_final_model(final.name)
    require("faster_whisper", "whisper", package="faster-whisper")


def load_final_model(opts: RunOptions, device: str) -> WhisperFinalModel | None:
    """The Whisper final-pass model (--final-model), or None."""
    if opts.final_model.name is None:
        return None
    from streamer.model.whisper import load_final_model as load

    status(f"streamer: loading final model {opts.final_model.name} ...")
    return load(opts.final_model, device)


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


def shipped_language_model(decoder: DecoderOptions, ctc: FrameModel) -> LanguageModelFiles | None:
    """The checkpoint's own n-gram LM when finals should use it: --decoder auto or beam, no --lm file. It is
    checked against the vocabulary (one line naming the bad file). Under auto, a missing pyctcdecode/kenlm is
    a one-line warning and greedy finals: the default run keeps working; --decoder beam makes it an error."""
    folder: Path | None = getattr(ctc, "language_model_dir", None)
    if folder is None or decoder.kind == "greedy" or decoder.lm:
        return None
    from streamer.model.beam import check_available
    from streamer.model.language_model import read_language_model

    lm = read_language_model(folder, ctc.vocabulary)
    try:
        check_available(language_model=True)
    except MissingDependencyError as exc:
        if decoder.kind != "auto":
            raise
        stderr_line(f"streamer: warning: the model ships a language model but {exc.message}, so finals are decoded "
                    f"greedily ({exc.hint}, or pass --decoder greedy)")
        return None
    return lm


def final_rescorer(decoder: DecoderOptions, ctc: FrameModel, desktop: DesktopSink | None,
                   whisper_finals: bool = False) -> FinalRescorer | None:
    """Beam search for finals when asked for, or by default when the checkpoint ships a language model (or
    --lm gives one); None keeps greedy decoding. Partials stay greedy either way."""
    # the command phrases bias finals only when beam search is asked for: a phrase pulled into a near miss
    # would run its program, so the LM that is on by default does not bring them in
    hotwords = [*decoder.hotwords, *(desktop.hotwords if desktop and decoder.kind == "beam" else ())]
    shipped = shipped_language_model(decoder, ctc)
    if decoder.kind == "greedy" or decoder.kind == "auto" and shipped is None and not decoder.lm:
        if decoder.hotwords and not whisper_finals:  # with --final-model they bias Whisper's finals
            stderr_line("streamer: note: --hotwords only bias beam search (--decoder beam); greedy decoding ignores them")
        return None
    from streamer.model.beam import BeamRescorer

    rescorer = BeamRescorer(ctc.vocabulary, lm_path=decoder.lm, hotwords=hotwords, beam_width=decoder.beam_width,
                            hotword_weight=decoder.hotword_weight, language_model=shipped)
    lm = f", language model {decoder.lm}" if decoder.lm else f", language model {shipped.describe()}" if shipped else ""
    status(f"streamer: beam search of finals (width {decoder.beam_width}{lm}, {len(rescorer.hotwords)} hotwords)")
    return rescorer


def open_input(opts: RunOptions) -> AudioInput:
    """The input file, FIFO or standard input, opened once (its header and first block read)."""
    from streamer.audio.files import RawFormat, open_audio

    assert opts.file is not None
    raw = RawFormat(opts.raw_rate, opts.raw_channels) if opts.raw_rate is not None else None
    return open_audio(opts.file, raw)


def report_shortfall(inp: AudioInput, code: int) -> int:
    """A truncated input was transcribed as far as it goes: one warning line, and exit code 1."""
    if inp.shortfall is None:
        return code
    stderr_line(f"streamer: warning: {inp.shortfall}; the transcript covers what was read")
    return max(code, PARTIAL_EXIT)


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (CUDA) and the CPU allocator's RuntimeError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_offline(opts: RunOptions) -> int:
    """The whole file in one forward pass: the reference decode (streamer.model.reference)."""
    from streamer.core.decoding import GreedyDecoder
    from streamer.core.stitching import collapse
    from streamer.model import load_model, reference_decode
    from streamer.sinks.stdout import STDOUT_FAILED_EXIT, StdoutFinals

    inp = open_input(opts)
    desktop = prepare_outputs(opts)
    ctc = load_model(opts.session.config.model, warmup=False)
    audio = inp.read_16k()
    try:
        ref = reference_decode(ctc.model, ctc.processor, audio)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise OutOfMemory(f"out of memory decoding {inp.info.label} ({len(audio) / MODEL_SAMPLE_RATE:.0f} s) in one "
                          f"pass on {ctc.device}", "drop --offline to stream it in windows, or use a smaller model") from exc
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
    return report_shortfall(inp, STDOUT_FAILED_EXIT if stdout.failed is not None else 0)


def run_file(opts: RunOptions) -> int:
    """Captions of a file (or a FIFO, or standard input), replayed as fast as the pipeline goes or paced
    like a microphone. The input is opened once, before the model loads."""
    from streamer.audio.replay import FileReplay

    inp = open_input(opts)
    info = inp.info
    mode = opts.replay_mode
    length = "stream" if info.duration_s is None else f"{info.duration_s:.1f} s"
    name = info.name if info.name == "standard input" else info.path.name
    header = f"file {name} ({info.sample_rate} Hz, {info.channels} ch, {length}, replay {mode})"
    code = run_captions(opts, lambda ring, stop: FileReplay(inp, ring, mode, stop), header,
                        catch_up=mode != "fast", interrupt_exit=INTERRUPTED_EXIT)
    return code if code == INTERRUPTED_EXIT else report_shortfall(inp, code)


def run_live(opts: RunOptions) -> int:
    """Captions of the microphone, of the desktop's audio (--desktop), or of both side by side
    (streamer.app.sources): the devices are checked before the model loads."""
    from streamer.audio.capture import Capture, header_text
    from streamer.audio.devices import CaptureSettings, check_settings, list_input_devices, resolve_input_device

    if opts.sources.both:
        from streamer.app.sources import live_inputs, run_sources

        return run_sources(opts, live_inputs(opts))
    if opts.sources.desktop:
        from streamer.audio.monitor import resolve_desktop_device

        settings = check_settings(resolve_desktop_device(list_input_devices()))
    else:
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


def run_captions(opts: RunOptions, source: SourceFactory, header: str, catch_up: bool, interrupt_exit: int = 0) -> int:
    """Load the model, run one Session to the end of the stream (or Ctrl+C / SIGTERM / q), show it on the
    caption screen or as plain lines, and report what was lost. Every output is written on every exit path.
    Ctrl+C returns `interrupt_exit`: 0 for a live session (a normal way to stop), 130 for a file."""
    desktop = prepare_outputs(opts)
    say: list[Callable[[str], None]] = [stderr_line]  # the caption screen takes over while it is up
    control = open_control(opts, lambda msg: say[0](msg))  # the name is claimed before the model loads
    try:
        return _run_session(opts, source, header, catch_up, interrupt_exit, desktop, control, say)
    finally:
        if control is not None:
            control.close()


def open_control(opts: RunOptions, say: Callable[[str], None]) -> ControlServer | None:
    """The control socket of this run (streamer ctl), or None when it has none."""
    if opts.control.name is None:
        return None
    from streamer.app.control import DEFAULT_NAME, ControlError, ControlServer, NameInUse

    try:
        control = ControlServer(name=opts.control.name, say=say).open()
    except NameInUse:
        raise
    except ControlError as exc:
        if opts.control.name != DEFAULT_NAME:  # asked for by name: the user wants it
            raise
        stderr_line(f"streamer: warning: no control socket ({exc.one_line()}); streamer ctl cannot reach this run")
        return None
    if control.replaced_stale:
        status(f"streamer: replaced a stale control socket left by a stopped instance ({control.path})")
    return control


def attach_control(control: ControlServer, target: ControlTarget, sessions: Sequence[Session], model: str,
                   sources: tuple[str, ...]) -> None:
    """`streamer ctl` drives `target` (the session, or the group of them) from now on; its status names the
    model and the sources, and counts over all the sessions."""
    from streamer.app.control import ControlStatus

    def current() -> ControlStatus:
        stopping = any(s.stopping.is_set() for s in sessions)
        state = "stopping" if stopping else "paused" if target.paused else "listening"
        return ControlStatus(control.name, os.getpid(), state, model, sources, time.monotonic() - control.started,
                             control.utterances, sum(s.dropped_samples() for s in sessions),
                             max(s.processed_s for s in sessions))

    for session in sessions:
        session.add_handler(control.handle_event)
    control.attach(target, current)


def announce_control(control: ControlServer | None, paused: bool) -> None:
    """The plain-output line that says the instance is ready and how to drive it."""
    if control is None:
        how = "SIGUSR1 toggles"
    else:
        how = "streamer ctl pause|resume|toggle|status|quit" + ("" if control.name == "default" else
                                                               f" --name {control.name}")
    stderr_line(f"streamer: ready, {'paused' if paused else 'listening'} ({how})")


def _on_sigusr1(toggle: Callable[[], object]) -> None:
    """SIGUSR1 pauses or resumes (as `streamer ctl toggle`); on a thread, since pausing takes a lock."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=toggle, name="sigusr1", daemon=True).start())


def _run_session(opts: RunOptions, source: SourceFactory, header: str, catch_up: bool, interrupt_exit: int,
                 desktop: DesktopSink | None, control: ControlServer | None, say: list[Callable[[str], None]]) -> int:
    from streamer.model import load_model
    from streamer.sinks.stdout import STDOUT_FAILED_EXIT, StdoutFinals

    config = opts.session.config
    status(f"streamer: loading {config.model.name} ...")
    ctc = load_model(config.model)
    # checked against the wav2vec2 20 ms frame before loading; now against this model's own frame
    check_frame_grid(config.window.hop_ms, config.window.lookahead_ms, ctc.geometry.frame_s * 1000)
    stdout = None if opts.tui else StdoutFinals()
    sinks: list[Sink] = ([stdout] if stdout is not None else []) + open_outputs(opts) + ([desktop] if desktop else [])
    final_model = load_final_model(opts, str(ctc.device))
    session = Session(ctc, source, SessionOptions(config, catch_up=catch_up), sinks=sinks,
                      final_rescorer=final_rescorer(opts.decoder, ctc, desktop, final_model is not None),
                      final_model=final_model, final_hotwords=opts.decoder.hotwords)
    from streamer.model.runtime import release_free_memory

    release_free_memory()  # what building the session freed (Silero's ONNX Runtime session: ~8 MB)
    ui = None
    if opts.tui:
        from streamer.ui import CaptionUI

        described = ctc.description + (f"; finals: {final_model.description}" if final_model is not None else "")
        ui = CaptionUI(model=described, audio=header, session=session)
        session.add_handler(ui.handle)
        say[0] = ui.notify
        if desktop is not None:  # no stray stderr lines on the UI's screen: shown by it, or printed after it
            desktop.notify = ui.notify
    else:
        status(f"streamer: {ctc.description}; " + (f"finals: {final_model.description}; " if final_model else "") + header)
        session.add_handler(notice_printer(stderr_line))  # stalls, device gaps, drops: told as they happen
    _on_sigterm(session.request_stop)
    _on_sigusr1(session.toggle_pause)
    if opts.control.start_paused:
        session.pause()
    if control is not None:
        attach_control(control, session, [session], ctc.description, (header,))
    if not opts.tui and (control is not None or opts.control.start_paused):
        announce_control(control, session.paused)
    interrupted = False
    try:
        session.start()
        if ui is not None:
            ui.run()
        else:
            _wait(session, show_progress=session.source.mode == "fast" and sys.stderr.isatty())
    except KeyboardInterrupt:
        interrupted = True  # stop below: the pending segment is flushed as a final and every output written
    finally:
        session.stop()
    for line in session.warnings():  # what was lost is told even when a failure ends the run below
        stderr_line(f"streamer: {line}")
    errors = session.errors()
    for extra in errors[1:]:  # several faults: each one line; the first is raised for the exit code
        stderr_line(f"streamer: error: {extra.one_line() if isinstance(extra, StreamerError) else extra}")
    if errors:
        raise errors[0]
    if interrupted and interrupt_exit:
        stderr_line(f"streamer: interrupted after {session.processed_s:.1f} s of audio; the outputs hold the "
                    "transcript up to there")
        return interrupt_exit
    if stdout is not None and stdout.failed is not None:
        return STDOUT_FAILED_EXIT  # said when it happened; every other output is complete
    return 0  # Ctrl+C / SIGTERM / SIGHUP stop a live session normally: everything was flushed and written


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

    samples = session.source.total_samples
    total = None if samples is None else samples / MODEL_SAMPLE_RATE  # None: a stream of unknown length
    counter = "{task.completed:.0f} s" if total is None else "{task.completed:.0f}/{task.total:.0f} s"
    with Progress(TextColumn("transcribing"), BarColumn(), TextColumn(counter),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replay", total=total)
        while not ended():
            progress.update(task, completed=session.processed_s)
