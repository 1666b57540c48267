"""The live caption screen: the main thread reads keys and redraws (Rich `Live`) from a fresh snapshot of
the state, 12 times a second while captions move and 4 in silence. The worker only calls `handle()`, which
takes a lock for a moment.

Threads and who owns what:
- worker thread: `CaptionUI.handle(event)` -> `LiveState.apply` (under the state's lock);
- desktop-output thread: `CaptionUI.notify(message)` -> `LiveState.notice` (same lock);
- main thread: `CaptionUI.run()`: the terminal (alternate screen, cbreak mode), keys, pause/clear/quit, and
  the redraws `render(state.snapshot())`.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Protocol

from streamer.core.events import Event
from streamer.ui.state import LiveState
from streamer.ui.view import render

#: Screen refreshes per second while captions move (speech, or a change within LIVELY_HOLD_S): smooth text
#: and meter. In silence the screen refreshes IDLE_REFRESH_PER_SECOND times (the meter still moves): a redraw
#: costs ~1.5 ms of CPU, so 12 a second in room tone were ~2% of a core (BENCHMARKS.md, issue 32).
REFRESH_PER_SECOND = 12
IDLE_REFRESH_PER_SECOND = 4
LIVELY_HOLD_S = 1.0
#: After quit, keep the screen up this long at most for the worker to flush the pending segment as a final.
FINISH_WAIT_S = 3.0


class KeyReader:
    """Single key presses from a terminal on stdin (cbreak mode: no echo, no Enter needed; Ctrl+C still
    interrupts). Without a terminal on stdin there are no keys and `read` just waits."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        self.fd: int | None = None
        try:
            if self.stream is not None and self.stream.isatty():
                self.fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None

    @contextmanager
    def cbreak(self):
        if self.fd is None:
            yield self
            return
        import termios
        import tty

        saved = termios.tcgetattr(self.fd)
        try:
            tty.setcbreak(self.fd)
            yield self
        finally:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def read(self, timeout: float, wake: threading.Event) -> str:
        """Keys typed within `timeout` seconds ('' if none); returns early when `wake` is set."""
        if self.fd is None:
            wake.wait(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        data = os.read(self.fd, 64)
        if data.startswith(b"\x1b"):  # arrow keys and other escape sequences ("\x1b[C") are not commands
            return ""
        return data.decode("utf-8", "replace")


class Controls(Protocol):
    """What the screen drives (a streamer.app.Session): stop, pause, and the end of the stream."""

    stopping: threading.Event

    @property
    def finished(self) -> threading.Event: ...

    @property
    def paused(self) -> bool: ...

    def request_stop(self) -> None: ...

    def toggle_pause(self) -> bool: ...


class CaptionUI:
    def __init__(self, model: str, audio: str, session: Controls, console=None, keys: KeyReader | None = None,
                 lanes: tuple[str, ...] = ()) -> None:
        self.state = LiveState(model, audio, lanes)
        self.session = session
        self.console = console
        self.keys = keys or KeyReader()
        self._notice_lock = threading.Lock()
        self._screen_closed = False

    # -- worker thread -------------------------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        self.state.apply(event)

    def lane_handler(self, label: str) -> Callable[[Event], None]:
        """The handler for one of several sources' sessions (its worker thread): events land in its lane."""
        return lambda event: self.state.apply_lane(label, event)

    # -- desktop-output thread (voice commands, clipboard) --------------------------------------------------
    def notify(self, message: str) -> None:
        """A line that would go to stderr: shown on the screen for a while and printed after it closes (at
        once, when the screen has already closed)."""
        with self._notice_lock:
            if not self._screen_closed:
                self.state.notice(message, time.time())
                return
        print(message, file=sys.stderr, flush=True)

    # -- main thread ---------------------------------------------------------------------------------------
    def renderable(self):
        return render(self.state.snapshot(time.time()))

    def press(self, key: str) -> None:
        key = key.lower()
        if key == "q":
            self.session.request_stop()
        elif key == "p":
            self.state.set_paused(self.session.toggle_pause())
        elif key == "c":
            self.state.clear()

    def run(self) -> None:
        """Show the screen until quit (q, Ctrl+C, SIGTERM via `stop`) or the end of the stream; the
        pending segment is flushed as a final while the screen is still up. Then the terminal is restored
        and the finished captions are printed, so the transcript stays in the terminal."""
        from rich.console import Console
        from rich.live import Live

        console = self.console or Console()
        try:
            with Live(console=console, screen=True, auto_refresh=False,
                      get_renderable=self.renderable, redirect_stdout=False, redirect_stderr=False) as live:
                try:
                    with self.keys.cbreak():
                        due = 0.0  # the main thread redraws: fast while captions move, slowly in silence
                        while not (self.session.stopping.is_set() or self.session.finished.is_set()):
                            now = time.monotonic()
                            if now >= due:
                                live.refresh()
                                lively = self.state.lively(now, LIVELY_HOLD_S)
                                due = now + 1.0 / (REFRESH_PER_SECOND if lively else IDLE_REFRESH_PER_SECOND)
                            for key in self.keys.read(max(0.0, due - time.monotonic()), self.session.stopping):
                                self.press(key)
                                due = 0.0  # show what the key did at once
                            self.state.set_paused(self.session.paused)  # also paused from outside (streamer ctl)
                finally:
                    self.session.request_stop()
                    self.session.finished.wait(FINISH_WAIT_S)
        finally:
            self.print_transcript(console)

    def print_transcript(self, console) -> None:
        texts, let_go = self.state.transcript()
        if let_go:
            console.print(f"[dim]({let_go} earlier captions are not shown; --output PATH keeps everything)[/dim]")
        for text in texts:
            console.print(text, markup=False, highlight=False, soft_wrap=True)
        with self._notice_lock:
            self._screen_closed = True
            notices = self.state.all_notices()
        for message in notices:
            print(message, file=sys.stderr, flush=True)
