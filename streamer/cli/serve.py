"""`streamer serve`: the server's command line (the same model and streaming flags as `streamer`)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from streamer.cli.args import Parser, add_model_argument, add_streaming_arguments, config_from_args, finite_float, positive_int
from streamer.errors import ConfigError

if TYPE_CHECKING:
    from streamer.server.run import ServeOptions

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
    add_model_argument(p)
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
    r = p.add_argument_group("Ray Serve (pip install 'streamer[ray]'; docs/server.md)")
    r.add_argument("--ray", action="store_true", help="deploy the --websocket endpoint as a Ray Serve application: "
                   "replicas each hold the model and take whole connections, scaled on sessions (not --wyoming)")
    r.add_argument("--ray-address", metavar="ADDRESS", help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001 "
                   "(default: one running on this machine, else a new local one)")
    r.add_argument("--min-replicas", type=int, metavar="N", help="replicas kept at least (default 1; 0: scale to zero)")
    r.add_argument("--max-replicas", type=int, metavar="N", help="replicas at most (default: --min-replicas, or 1)")
    r.add_argument("--target-sessions", type=finite_float, metavar="N",
                   help="sessions per replica that autoscaling aims at (default: half of --max-sessions)")
    r.add_argument("--replica-cpus", type=finite_float, metavar="N", help="CPUs each replica reserves (default 1)")
    r.add_argument("--replica-gpus", type=finite_float, metavar="N",
                   help="GPUs each replica reserves (default 0; fractions share a GPU; --device auto, the default, then "
                   "runs the model on it)")
    p.add_argument("--decoder", choices=("auto", "greedy", "beam"), default="auto",
                   help="how finals are decoded, as in `streamer` (auto: beam search with the language model the "
                        "checkpoint ships, e.g. the demo model's; greedy: off; partials are always greedy)")
    p.add_argument("--debug", action="store_true", help="verbose logging and tracebacks")
    return p


RAY_FLAGS = ("ray_address", "min_replicas", "max_replicas", "target_sessions", "replica_cpus", "replica_gpus")


def serve_on_ray(args: argparse.Namespace, options: ServeOptions) -> int:
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("fastapi") is None:
        raise ConfigError("streamer serve --ray needs Ray Serve", "pip install 'streamer[ray]'")
    # Read when ray is imported: Ray folds log lines that differ only in numbers into "[repeated Nx]", and
    # the replicas' per-connection lines (peer ports, amounts) differ only in numbers.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from streamer.server.ray_serve import RayOptions, serve_ray

    low = args.min_replicas if args.min_replicas is not None else 1
    ray = RayOptions(address=args.ray_address, min_replicas=low,
                     max_replicas=args.max_replicas if args.max_replicas is not None else max(low, 1),
                     target_sessions=args.target_sessions,
                     replica_cpus=args.replica_cpus if args.replica_cpus is not None else 1.0,
                     replica_gpus=args.replica_gpus if args.replica_gpus is not None else 0.0)
    return serve_ray(options, ray)


def main(argv: list[str]) -> int:
    import logging

    from streamer.server import Limits, ServeOptions, serve
    from streamer.server.batching import BatchOptions

    args = build_parser().parse_args(argv)
    if not args.ray and any(getattr(args, f) is not None for f in RAY_FLAGS):
        raise ConfigError("--ray-address, --min-replicas, --max-replicas, --target-sessions and --replica-* need --ray")
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
    from streamer.app.options import DecoderOptions
    from streamer.app.run import check_decoder

    decoder = DecoderOptions(kind=args.decoder)
    check_decoder(decoder, args.model)  # --decoder beam without kenlm: one line now, not after loading
    options = ServeOptions(config_from_args(args, args.model), args.wyoming, args.websocket, limits, batch=batch,
                           decoder=decoder)
    if args.ray:
        return serve_on_ray(args, options)
    return serve(options)
