"""`streamer`: parse, dispatch, and turn every StreamerError into one line on stderr and a non-zero exit
(a traceback only with --debug). The application itself is streamer.app."""

from __future__ import annotations

import logging
import os
import sys

from streamer.errors import ConfigError, StreamerError


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if argv[:1] == ["ctl"]:  # first: a key bound to it must act at once (nothing heavy is imported)
        try:
            from streamer.cli.ctl import main as ctl_main

            return ctl_main(argv[1:])
        except StreamerError as exc:
            if debug:
                raise
            _stderr(f"streamer: error: {exc.one_line()}")
            return exc.exit_code
    from streamer.model.runtime import configure_openmp

    configure_openmp()  # before anything imports torch
    try:
        if argv[:1] == ["bench"]:
            from streamer.bench import main as bench_main

            return bench_main(argv[1:])
        if argv[:1] == ["serve"]:
            from streamer.cli.serve import main as serve_main

            return serve_main(argv[1:])
        from streamer.cli import settings
        from streamer.cli.args import build_parser

        parser = build_parser()
        loaded = settings.parse_args(parser, argv)
        if loaded.args.debug and not debug:  # debug = true in the settings file
            debug = True
            logging.getLogger().setLevel(logging.DEBUG)
        return _dispatch(parser, loaded)
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


def _dispatch(parser, loaded) -> int:
    from streamer.cli import settings
    from streamer.cli.args import config_from_args, run_options

    args = loaded.args
    config = config_from_args(args, args.model)
    if args.print_config:
        sys.stdout.write(settings.format_settings(parser, args, loaded.path))
        return 0
    if args.list_devices:
        from streamer.audio.devices import print_devices

        return print_devices()
    if args.offline and not args.file:
        raise ConfigError("--offline needs --file PATH", "give the audio file to decode")
    if args.raw_rate is not None and not args.file:
        raise ConfigError("--raw-rate needs --file PATH (or --file - for standard input)", "give the raw PCM input")
    if args.raw_channels < 1:
        raise ConfigError(f"--raw-channels must be at least 1, not {args.raw_channels}")
    opts = run_options(args, config, tui=not args.no_tui and sys.stdout.isatty())
    from streamer.app import run

    if opts.file:
        return run.run_offline(opts) if opts.offline else run.run_file(opts)
    return run.run_live(opts)
