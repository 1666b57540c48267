"""`streamer ctl pause|resume|toggle|status|quit [--json] [--name N]`: control a running streamer through its
socket (streamer.app.control). Light on purpose: no numpy, torch or transformers, so a key bound to it
acts at once. Exit codes: 0 done; 1 no instance is running (or it did not answer); 2 refused or bad
arguments."""

from __future__ import annotations

import argparse
import json
import sys

from streamer.app.control import COMMANDS, DEFAULT_NAME, check_name, request
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.errors import ConfigError

#: How long ctl waits for the instance's answer.
DEFAULT_TIMEOUT_S = 5.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, as for every bad input
        raise ConfigError(f"bad arguments: {message}", "see streamer ctl --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamer ctl", description="Control a running streamer (live captions or dictation) from "
                "outside, e.g. from a keyboard shortcut: see docs/control.md.",
                epilog="push-to-talk: start `streamer --start-paused --type`, bind `streamer ctl resume` to a key "
                       "press and `streamer ctl pause` to its release.\n"
                       "exit codes: 0 done; 1 no streamer is running with that name; 2 refused or bad arguments",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=COMMANDS,
                   help="pause (finalise the utterance in progress now, then stop listening), resume, toggle, "
                        "status (state, model, sources, uptime, utterances, dropped samples), quit")
    p.add_argument("--name", default=DEFAULT_NAME, help=f"the instance (streamer --name N; default {DEFAULT_NAME!r})")
    p.add_argument("--json", action="store_true", help="print the instance's answer as JSON")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"how long to wait for the answer (default {DEFAULT_TIMEOUT_S:g})")
    return p


def format_status(status: dict) -> str:
    sources = status.get("sources") or []
    dropped = int(status.get("dropped_samples", 0))
    return "\n".join([
        f"state:           {status.get('state')}",
        f"model:           {status.get('model')}",
        f"{'sources:' if len(sources) > 1 else 'source:':<17}" + "; ".join(str(s) for s in sources),
        f"uptime:          {_duration(float(status.get('uptime_s', 0.0)))}",
        f"utterances:      {status.get('utterances')}",
        f"dropped samples: {dropped} ({dropped / MODEL_SAMPLE_RATE:.2f} s)",
        f"instance:        {status.get('name')} (pid {status.get('pid')})",
    ])


def _duration(seconds: float) -> str:
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(int(minutes), 60)
    return f"{hours}:{m:02d}:{s:04.1f}" if hours else (f"{m}:{s:04.1f}" if m else f"{s:.1f} s")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_name(args.name)
    answer = request(args.command, args.name, args.timeout_s)
    if args.json:
        print(json.dumps(answer), flush=True)
    if not answer.get("ok"):
        if not args.json:
            print(f"streamer: error: {answer.get('error', 'the instance refused the command')}", file=sys.stderr)
        return 2
    if not args.json:
        status = answer.get("status", {})
        if args.command == "status":
            print(format_status(status), flush=True)
        elif args.command == "quit":
            print(f"streamer {status.get('name')}: stopping", flush=True)
        else:
            print(f"streamer {status.get('name')}: {status.get('state')}", flush=True)
    return 0
