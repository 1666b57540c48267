"""Plain output (--no-tui): each final on its own stdout line, flushed so pipes see it at once.

Standard output that fails (the reader closed the pipe, as `| head -1` does; a full disk) is dropped with
one warning line on stderr, and standard output is pointed at /dev/null so nothing is left to fail at
interpreter exit; every other output goes on. `failed` tells the caller to exit non-zero."""

from __future__ import annotations

import errno
import os
import sys

from streamer.core.events import Event, FinalEvent
from streamer.sinks.labels import SourceLabel, labelled

#: The process exit code when standard output failed (every other output was written completely).
STDOUT_FAILED_EXIT = 1


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null: what Python still holds in sys.stdout's buffer is flushed there
    at exit, instead of raising BrokenPipeError again ("Exception ignored ... BrokenPipeError")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced or closed: nothing of ours to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class StdoutFinals:
    def __init__(self) -> None:
        self.failed: OSError | None = None

    def handle(self, event: Event) -> None:
        self.handle_from(event, None)

    def handle_from(self, event: Event, source: SourceLabel | None) -> None:
        """With several sources (streamer.sinks.labels.SourceTap), each line starts with its label."""
        if isinstance(event, FinalEvent) and event.text:
            self.line(labelled(event.text, source))

    def line(self, text: str) -> None:
        if self.failed is not None:
            return
        try:
            print(text, flush=True)
        except OSError as exc:
            self.failed = exc
            silence_stdout()
            why = exc.strerror or str(exc)
            what = "closed" if exc.errno == errno.EPIPE else "failed"
            try:
                print(f"streamer: warning: standard output {what} ({why}); the other outputs go on",
                      file=sys.stderr, flush=True)
            except OSError:
                pass

    def close(self) -> None:
        pass
