"""Where finals and events go: transcript files, stdout, clipboard, typing, voice commands."""

from __future__ import annotations

from typing import Protocol

from streamer.events import Event


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...
