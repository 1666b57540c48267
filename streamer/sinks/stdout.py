"""Plain output (--no-tui): each final on its own stdout line, flushed so pipes see it at once."""

from __future__ import annotations

from streamer.core.events import Event, FinalEvent


class StdoutFinals:
    def handle(self, event: Event) -> None:
        if isinstance(event, FinalEvent) and event.text:
            print(event.text, flush=True)

    def close(self) -> None:
        pass
