"""Command line: arguments -> Config -> run. Every StreamerError becomes one line on stderr and a non-zero
exit (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from streamer import __version__
from streamer.config import DEFAULT_MODEL, MODEL_SAMPLE_RATE, BufferConfig, Config, ModelConfig, VadConfig, WindowConfig
from streamer.errors import ConfigError, StreamerError
from streamer.events import Event, FinalEvent

log = logging.getLogger("streamer")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        raise ConfigError(f"bad arguments: {message}", "see streamer --help")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    d_vad, d_win, d_buf = VadConfig(), WindowConfig(), BufferConfig()
    p = _Parser(prog="streamer", description="Live captions from the microphone (default) or an audio file, "
                "with a wav2vec2 CTC model stitched exactly on its frame grid.")
    p.add_argument("--version", action="version", version=f"streamer {__version__}")
    src = p.add_argument_group("input")
    src.add_argument("--file", metavar="PATH", help="stream an audio file (WAV/FLAC/OGG, any rate/channels) instead of the microphone")
    src.add_argument("--replay", choices=("fast", "realtime"), default=None,
                     help="file pacing: as fast as the pipeline goes, or paced like a microphone "
                          "(default: realtime with the TUI, fast with --no-tui)")
    src.add_argument("--offline", action="store_true", help="decode the whole file at once (the Hugging Face reference decode)")
    src.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    src.add_argument("--input-device", metavar="INDEX_OR_NAME", help="input device: index or part of its name")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR",
                   help=f"hub id, local HF model folder, or 'demo' for the bundled demo model (default {DEFAULT_MODEL})")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="compute device (auto: CUDA fp16 if present)")
    m.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=ModelConfig().quantize,
                   help="int8 dynamic quantisation of the linear layers on CPU (default: on for models of "
                        f"{ModelConfig().quantize_min_parameters // 1_000_000} M parameters or more, e.g. "
                        "wav2vec2-base; --quantize / --no-quantize force it)")
    m.add_argument("--threads", type=_positive_int, default=0, help="torch CPU threads (0: torch default)")
    w = p.add_argument_group("streaming windows")
    w.add_argument("--hop-ms", type=_positive_int, default=d_win.hop_ms, help=f"audio committed per step (default {d_win.hop_ms})")
    w.add_argument("--left-context-ms", type=_positive_int, default=d_win.left_context_ms,
                   help=f"context before the hop (default {d_win.left_context_ms})")
    w.add_argument("--lookahead-ms", type=_positive_int, default=d_win.lookahead_ms,
                   help=f"look-ahead after the hop, shown tentatively (default {d_win.lookahead_ms})")
    w.add_argument("--final-pass-max-s", type=float, default=d_win.final_pass_max_s,
                   help="decode each utterance up to this long once more in one pass for its final "
                        f"(default {d_win.final_pass_max_s:g}; 0: finals are the stitched windows)")
    v = p.add_argument_group("voice activity detection")
    v.add_argument("--vad-aggressiveness", type=int, default=d_vad.aggressiveness, help=f"0..3 (default {d_vad.aggressiveness})")
    v.add_argument("--vad-frame-ms", type=int, default=d_vad.frame_ms, help=f"10, 20 or 30 (default {d_vad.frame_ms})")
    v.add_argument("--vad-confirm", choices=("auto", "silero", "off"), default=d_vad.confirm,
                   help="confirm webrtcvad's speech frames with Silero VAD (rejects music and noise; auto: if installed)")
    v.add_argument("--max-segment-s", type=float, default=d_vad.max_segment_s,
                   help=f"finalise very long speech in pieces after this long (default {d_vad.max_segment_s:g})")
    o = p.add_argument_group("output")
    o.add_argument("--no-tui", action="store_true", help="plain output: each final on its own stdout line")
    o.add_argument("--output", action="append", default=[], metavar="PATH",
                   help="write the transcript; by extension .txt, .srt, .vtt or .jsonl (repeatable)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing --output file (default: refuse)")
    o.add_argument("--debug", action="store_true", help="verbose logging and tracebacks")
    add_dictation_arguments(p)
    p.set_defaults(ring_capacity_s=d_buf.ring_capacity_s)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(
        vad=VadConfig(aggressiveness=args.vad_aggressiveness, frame_ms=args.vad_frame_ms, max_segment_s=args.max_segment_s,
                      confirm=args.vad_confirm),
        window=WindowConfig(hop_ms=args.hop_ms, left_context_ms=args.left_context_ms, lookahead_ms=args.lookahead_ms,
                            final_pass_max_s=args.final_pass_max_s),
        model=ModelConfig(name=args.model, device=args.device, quantize=args.quantize, threads=args.threads),
        buffer=BufferConfig(ring_capacity_s=args.ring_capacity_s),
    ).validate()


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _status(msg: str) -> None:
    """Progress information for a person watching (stderr is a terminal); errors stay the only line otherwise."""
    if sys.stderr.isatty():
        _stderr(msg)


class StdoutFinals:
    """--no-tui: each final on its own line, flushed so pipes see it at once."""

    def handle(self, event: Event) -> None:
        if isinstance(event, FinalEvent) and event.text:
            print(event.text, flush=True)

    def close(self) -> None:
        pass


def open_outputs(paths: list[str], overwrite: bool = False):
    from streamer.sinks.files import open_output

    sinks = []
    try:
        for p in paths:
            sinks.append(open_output(p, overwrite))
    except StreamerError:
        for s in sinks:
            s.close()
        raise
    return sinks


def run_offline(args: argparse.Namespace, config: Config) -> int:
    """The Hugging Face tutorial decode: processor, one forward pass, argmax, batch_decode."""
    import torch

    from streamer.audio.files import probe, read_16k
    from streamer.decoding import GreedyDecoder
    from streamer.model import load_model
    from streamer.stitching import collapse
    from streamer.sinks.files import check_output_path

    info = probe(args.file)
    for p in args.output:
        check_output_path(p, args.overwrite)
    desktop = desktop_sink(args)
    ctc = load_model(config.model, warmup=False)
    audio = read_16k(info.path)
    inputs = ctc.processor(audio, sampling_rate=MODEL_SAMPLE_RATE, return_tensors="pt")
    inputs = {k: (v.to(ctc.device, ctc.dtype) if v.is_floating_point() else v.to(ctc.device)) for k, v in inputs.items()}
    with torch.inference_mode():
        logits = ctc.model(**inputs).logits
    predicted_ids = torch.argmax(logits, dim=-1)
    text = ctc.processor.batch_decode(predicted_ids)[0]
    rescorer = final_rescorer(args, ctc, desktop)
    if rescorer is not None:
        text = rescorer(logits[0].float().cpu().numpy())
    decoder = GreedyDecoder(ctc.vocabulary, ctc.geometry.frame_s)
    words = decoder.words(collapse(predicted_ids[0].cpu().numpy(), 0, ctc.vocabulary.blank_id).spans)
    end_s = len(audio) / MODEL_SAMPLE_RATE
    final = FinalEvent(audio_time_s=end_s, wall_time_s=time.time(), segment_id=0, text=text, words=words,
                       start_s=0.0, end_s=round(end_s, 3))
    print(text, flush=True)
    for sink in open_outputs(args.output, args.overwrite) + ([desktop] if desktop else []):
        sink.handle(final)
        sink.close()
    return 0


def wants_tui(args: argparse.Namespace) -> bool:
    """The live caption UI is shown when stdout is a terminal, unless --no-tui."""
    return not args.no_tui and sys.stdout.isatty()


def _install_sigterm(stop: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())


def run_stream(args: argparse.Namespace, config: Config, source_factory, header: str) -> int:
    """Shared by file replay and live capture: load the model, start source + worker, show output, stop
    cleanly (Ctrl+C / SIGTERM flush the pending segment and write every output)."""
    from streamer.audio.ringbuffer import RingBuffer
    from streamer.model import load_model
    from streamer.pipeline import Pipeline
    from streamer.recognizer import Recognizer
    from streamer.sinks.files import check_output_path

    desktop = desktop_sink(args)  # clipboard / typing / commands / beam: checked before the model loads
    for p in args.output:
        check_output_path(p, args.overwrite)
    use_tui = wants_tui(args)
    _status(f"streamer: loading {config.model.name} ...")
    ctc = load_model(config.model)
    stop = threading.Event()
    ring = RingBuffer(int(config.buffer.ring_capacity_s * MODEL_SAMPLE_RATE))
    source = source_factory(ring, stop)
    fast = getattr(source, "mode", None) == "fast"
    recognizer = Recognizer(ctc, config, clock=time.time,
                            max_hops_per_step=1 if fast else config.window.max_catch_up_hops,
                            final_rescorer=final_rescorer(args, ctc, desktop))
    sinks = open_outputs(args.output, args.overwrite) + ([desktop] if desktop else [])
    notices: list[str] = []
    if not use_tui:
        sinks.insert(0, StdoutFinals())
    pipeline = Pipeline(recognizer, ring, [s.handle for s in sinks], stop=stop,
                        extra_dropped=getattr(source, "dropped_samples", lambda: 0),
                        input_overflows=getattr(source, "input_overflows", lambda: 0))
    _install_sigterm(stop)
    ui = None
    if use_tui:
        from streamer.ui import CaptionUI  # noqa: PLC0415 (the UI is only imported when shown)

        ui = CaptionUI(model=ctc.description, audio=header, stop=stop, pipeline=pipeline)
        pipeline.add_handler(ui.handle)
        if desktop is not None:  # no stray stderr lines on the UI's screen: shown by it, or printed after it
            desktop.notify = getattr(ui, "notify", notices.append)
    else:
        _status(f"streamer: {ctc.description}; {header}")
    pipeline.start()
    try:
        source.start()  # inside the try: a device that fails to open still closes the worker and outputs
        if ui is not None:
            ui.run()
        else:
            _wait(pipeline, source, stop, fast and sys.stderr.isatty())
    except KeyboardInterrupt:
        pass  # stop below: the pending segment is flushed as a final and every output written
    finally:
        stop.set()
        if hasattr(source, "close"):
            source.close()
        ring.close()
        while not pipeline.join(timeout=0.5):
            pass
        for s in sinks:
            s.close()
        for line in notices:
            _stderr(line)
    if pipeline.error is not None:
        raise pipeline.error
    if pipeline.sink_errors:
        raise pipeline.sink_errors[0]
    if getattr(source, "error", None) is not None:
        raise source.error
    dropped = pipeline.dropped_samples()
    if dropped:
        _stderr(f"streamer: warning: {dropped} samples ({dropped / MODEL_SAMPLE_RATE:.2f} s) of audio were dropped because processing fell behind")
    overflows = pipeline.input_overflows()
    if overflows:
        _stderr(f"streamer: warning: the audio device reported {overflows} input overflows (audio lost before it reached streamer)")
    return 0  # Ctrl+C / SIGTERM are a normal way to stop: everything was flushed and written


def _wait(pipeline, source, stop: threading.Event, show_progress: bool) -> None:
    if not show_progress:
        while not pipeline.finished.wait(0.2):
            pass
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    total = getattr(source, "total_samples", 0) / MODEL_SAMPLE_RATE
    with Progress(TextColumn("transcribing"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replay", total=total)
        while not pipeline.finished.wait(0.2):
            progress.update(task, completed=pipeline.recognizer.audio_end_sample / MODEL_SAMPLE_RATE)


def run_file(args: argparse.Namespace, config: Config) -> int:
    from streamer.audio.files import probe
    from streamer.pipeline import FileReplay

    info = probe(args.file)
    mode = args.replay or ("realtime" if wants_tui(args) else "fast")
    header = f"file {info.path.name} ({info.sample_rate} Hz, {info.channels} ch, {info.duration_s:.1f} s, replay {mode})"
    return run_stream(args, config, lambda ring, stop: FileReplay(info.path, ring, mode, stop), header)


def run_live(args: argparse.Namespace, config: Config) -> int:
    from streamer.audio import capture  # the microphone edge

    return capture.run_live(args, config)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        import warnings

        warnings.filterwarnings("ignore")
        import os

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if argv[:1] == ["bench"]:
            from streamer.bench import main as bench_main

            return bench_main(argv[1:])
        parser = build_parser()
        args, settings_path = load_settings(parser, argv)
        if args.debug and not debug:  # debug = true in the settings file
            debug = True
            logging.getLogger().setLevel(logging.DEBUG)
        config = config_from_args(args)
        if args.print_config:
            return print_settings(parser, args, settings_path)
        if args.list_devices:
            from streamer.audio.capture import print_devices

            return print_devices()
        if args.offline and not args.file:
            raise ConfigError("--offline needs --file PATH", "give the audio file to decode")
        if args.file:
            return run_offline(args, config) if args.offline else run_file(args, config)
        return run_live(args, config)
    except StreamerError as exc:
        if debug:
            raise
        _stderr(f"streamer: error: {exc.one_line()}")
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        _stderr("streamer: interrupted")
        return 130
    except MemoryError:
        _stderr("streamer: error: out of memory (try a smaller model or shorter --max-segment-s)")
        return 1


# -- dictation, voice commands, beam search and the settings file (streamer.sinks.desktop, streamer.beam,
#    streamer.settings) ----------------------------------------------------------------------------------
def add_dictation_arguments(p: argparse.ArgumentParser) -> None:
    from streamer import settings
    from streamer.beam import DEFAULT_BEAM_WIDTH, DEFAULT_HOTWORD_WEIGHT

    d = p.add_argument_group("dictation and voice commands (finals only)")
    d.add_argument("--clipboard", nargs="?", const="replace", default="off", choices=("replace", "append", "off"),
                   metavar="MODE", help="put each final into the clipboard: replace (the latest utterance; the "
                   "default MODE) or append (the running transcript)")
    d.add_argument("--type", action="store_true", help="type finals into the focused window (xdotool, wtype or ydotool)")
    d.add_argument("--shaping", action=argparse.BooleanOptionalAction, default=True,
                   help="dictation text shaping: lowercase, capitals, spoken punctuation, 'scratch that'")
    d.add_argument("--capitalize", action=argparse.BooleanOptionalAction, default=True,
                   help="capitalise sentence starts and 'I' when shaping")
    d.add_argument("--spoken-punctuation", action=argparse.BooleanOptionalAction, default=True,
                   help="'period', 'comma', 'question mark', 'new line', 'new paragraph' ... become characters")
    d.add_argument("--editing-commands", action=argparse.BooleanOptionalAction, default=True,
                   help="'scratch that' removes the last utterance")
    d.add_argument("--commands", metavar="FILE", help="TOML file of voice commands (phrases -> insert, keys or run)")
    d.add_argument("--commands-only", action="store_true", help="voice commands only: nothing is dictated")
    b = p.add_argument_group("decoding")
    b.add_argument("--decoder", choices=("greedy", "beam"), default="greedy",
                   help="greedy (default) or beam search of finals (needs streamer[beam]; uses --lm and hotwords)")
    b.add_argument("--beam-width", type=_positive_int, default=DEFAULT_BEAM_WIDTH,
                   help=f"beam width (default {DEFAULT_BEAM_WIDTH})")
    b.add_argument("--lm", metavar="FILE", help="KenLM language model (.arpa or .bin) for beam search")
    b.add_argument("--hotwords", action="append", default=[], metavar="PHRASE",
                   help="a word or phrase beam search should prefer (repeatable; the command phrases are added)")
    b.add_argument("--hotword-weight", type=float, default=DEFAULT_HOTWORD_WEIGHT,
                   help=f"how strongly hotwords are preferred (default {DEFAULT_HOTWORD_WEIGHT:g})")
    settings.add_arguments(p)


def load_settings(parser: argparse.ArgumentParser, argv: list[str]):
    from streamer import settings

    loaded = settings.parse_args(parser, argv)
    return loaded.args, loaded.path


def print_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, path) -> int:
    from streamer import settings

    sys.stdout.write(settings.format_settings(parser, args, path))
    return 0


def desktop_sink(args: argparse.Namespace):
    """Clipboard / typing / voice commands, or None; tools and files are checked now, before the model loads.
    Beam search is checked here too."""
    from streamer.sinks.desktop import build_desktop_sink

    if args.decoder == "beam":
        from streamer.beam import check_available

        check_available(args.lm)
    elif args.lm:
        raise ConfigError("--lm needs --decoder beam", "add --decoder beam; it needs pip install 'streamer[beam]'")
    return build_desktop_sink(args)


def final_rescorer(args: argparse.Namespace, ctc, desktop):
    """Beam search for finals when --decoder beam; None keeps greedy decoding."""
    hotwords = [*args.hotwords, *(desktop.hotwords if desktop else ())]
    if args.decoder != "beam":
        if args.hotwords:
            _stderr("streamer: note: --hotwords only bias beam search (--decoder beam); greedy decoding ignores them")
        return None
    from streamer.beam import BeamRescorer

    rescorer = BeamRescorer(ctc.vocabulary, lm_path=args.lm, hotwords=hotwords, beam_width=args.beam_width,
                            hotword_weight=args.hotword_weight)
    _status(f"streamer: beam search of finals (width {args.beam_width}"
            + (f", language model {args.lm}" if args.lm else "") + f", {len(rescorer.hotwords)} hotwords)")
    return rescorer
