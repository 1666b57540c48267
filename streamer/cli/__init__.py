"""Command line: argument parsing and dispatch only (`streamer`, `streamer bench`, `streamer serve`,
`streamer ctl`). Importing this package imports nothing heavy, so `streamer ctl` starts at once."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.cli.args import build_parser
    from streamer.cli.main import main

__all__ = ["build_parser", "main"]


def __getattr__(name: str) -> object:
    import importlib

    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module("streamer.cli.main" if name == "main" else "streamer.cli.args")
    value = getattr(module, name)
    globals()[name] = value
    return value
