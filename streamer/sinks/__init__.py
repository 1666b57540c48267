"""Where finals and events go: transcript files, stdout, clipboard, typing, voice commands."""

from __future__ import annotations

from typing import Protocol

from streamer.core.events import Event


class Sink(Protocol):
    """Gets every event of a session on the worker thread (`handle`), then `close()` once at the end. A
    StreamerError from `handle` removes the sink from the session; the others go on."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...
