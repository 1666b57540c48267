"""Command line: argument parsing and dispatch only (`streamer`, `streamer bench`)."""

from streamer.cli.args import build_parser
from streamer.cli.main import main

__all__ = ["build_parser", "main"]
