"""`streamer serve`: the server's command line (the same model and streaming flags as `streamer`)."""

from __future__ import annotations

import argparse
import os

from streamer.cli.args import Parser, add_streaming_arguments, config_from_args, finite_float, positive_int
from streamer.core.config import DEFAULT_MODEL
from streamer.errors import ConfigError

TOKEN_ENV = "STREAMER_SERVER_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    from streamer.server.batching import BatchOptions
    from streamer.server.common import Limits

    d = Limits()
    p = Parser(prog="streamer serve", description="Serve many streams over one loaded model: a Wyoming ASR server "
               "(Home Assistant) and / or the vosk-server WebSocket protocol. See docs/server.md.")
    e = p.add_argument_group("endpoints (at least one)")
    e.add_argument("--wyoming", metavar="tcp://HOST:PORT", help="Wyoming ASR endpoint, e.g. tcp://127.0.0.1:10300")
    e.add_argument("--websocket", metavar="ws://HOST:PORT", help="vosk-compatible WebSocket endpoint, e.g. ws://127.0.0.1:2700")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR",
                   help=f"hub id, local HF model folder, or 'demo' (default {DEFAULT_MODEL})")
    add_streaming_arguments(p)
    lim = p.add_argument_group("limits and safety")
    lim.add_argument("--max-sessions", type=positive_int, default=d.max_sessions,
                     help=f"connections served at once; one more is refused with a reason (default {d.max_sessions})")
    lim.add_argument("--max-message-bytes", type=positive_int, default=d.max_message_bytes,
                     help=f"largest message a client may send (default {d.max_message_bytes})")
    lim.add_argument("--idle-timeout-s", type=float, default=d.idle_timeout_s,
                     help=f"close a connection silent this long (default {d.idle_timeout_s:g})")
    lim.add_argument("--token", default=None, help=f"shared secret clients must present (or set {TOKEN_ENV}; "
                     "the environment keeps it out of the process list)")
    b = p.add_argument_group("cross-stream batching")
    bd = BatchOptions()
    b.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True,
                   help="run the windows due across all streams as one batch (default); --no-batch: one window "
                   "at a time, in turn")
    b.add_argument("--batch-max", type=positive_int, default=bd.max_batch,
                   help=f"windows in one batch at most (default {bd.max_batch})")
    b.add_argument("--batch-wait-ms", type=finite_float, default=bd.wait_ms,
                   help=f"how long a batch may wait for more windows once one is due (default {bd.wait_ms:g}: "
                   "never; it takes what is queued when the model is free)")
    p.add_argument("--debug", action="store_true", help="verbose logging and tracebacks")
    return p


def main(argv: list[str]) -> int:
    import logging

    from streamer.server import Limits, ServeOptions, serve
    from streamer.server.batching import BatchOptions

    args = build_parser().parse_args(argv)
    if not args.wyoming and not args.websocket:
        raise ConfigError("streamer serve needs an endpoint", "give --wyoming tcp://HOST:PORT and / or --websocket ws://HOST:PORT")
    if not args.debug:
        logging.getLogger("streamer.server").setLevel(logging.INFO)
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    limits = Limits(max_sessions=args.max_sessions, max_message_bytes=args.max_message_bytes,
                    idle_timeout_s=args.idle_timeout_s, token=token)
    batch = BatchOptions(args.batch_max, args.batch_wait_ms).validate() if args.batch else None
    return serve(ServeOptions(config_from_args(args, args.model), args.wyoming, args.websocket, limits, batch=batch))
