"""Command line: argument parsing and dispatch only (`streamer`, `streamer bench`, `streamer serve`,
`streamer ctl`). Importing this package imports nothing heavy, so `streamer ctl` starts at once: `main` is
light, `build_parser` (the whole option set) is imported when first used."""

from typing import TYPE_CHECKING

# Bound here, not lazily: the submodule streamer.cli.main would otherwise shadow the function once imported.
from streamer.cli.main import main

if TYPE_CHECKING:
    from streamer.cli.args import build_parser

__all__ = ["build_parser", "main"]


def __getattr__(name: str) -> object:
    if name != "build_parser":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from streamer.cli.args import build_parser as value

    globals()[name] = value
    return value
