"""The application: a Session runs source -> ring -> worker -> recognizer -> sinks over a loaded model;
streamer.app.run holds the flows the command line dispatches to, streamer.app.control the control socket.
Importing this package imports nothing heavy: `Session` is imported when first used."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.app.session import Session, SessionOptions

__all__ = ["Session", "SessionOptions"]


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from streamer.app import session

    value = getattr(session, name)
    globals()[name] = value
    return value
