"""Dictation and voice commands on the desktop: each final goes to the voice commands first; what is not a
command is shaped (streamer.sinks.dictation) and put into the clipboard and/or typed into the focused window.

Partials never reach this sink's outputs: it acts on FinalEvents only. Everything is found at start (the
commands file, the clipboard tool, the typing tool), before the model loads, so a missing tool is one line
and not a surprise mid-dictation. The outputs run on a thread of their own (typing a long utterance takes a
second, which must not hold up the recognizer); a failing tool mid-run is a warning, and dictation goes on.

Typed newlines: a newline typed into a window is a Return key press, and Return in a terminal runs the line.
So with --type a newline (a spoken "new line" / "new paragraph", or one in a command's insert text) is typed as
a space, with one notice, unless DesktopOptions.type_newlines (--type-newlines) is set. One character for one
keeps the typed copy as long as the document, so "scratch that" still sends the right number of backspaces.
The clipboard always gets the real newlines.

Threads: `handle` runs on the pipeline worker and only queues finals; the desktop thread owns the Dictation
state, the command router and the tools.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamer.core.events import Event, FinalEvent
from streamer.errors import ConfigError, StreamerError
from streamer.sinks.clipboard import Clipboard, detect_clipboard
from streamer.sinks.commands import CommandRouter, CommandSet, ProgramRunner, load_commands
from streamer.sinks.dictation import Delete, Dictation, DictationUpdate, Insert, ShapingConfig
from streamer.sinks.typing import Typer, detect_typer, parse_chord

log = logging.getLogger(__name__)

CLIPBOARD_MODES = ("off", "replace", "append", "paste")
#: --clipboard paste: the key chord that pastes in the focused window (Ctrl+Shift+V in most terminals).
DEFAULT_PASTE_KEYS = "ctrl+v"
#: --clipboard paste: how long the pasted text stays in the clipboard before what it held before is put back.
#: The window reads the clipboard only when it handles the key, after the key tool has returned; espanso,
#: which pastes the same way, waits 300 ms by default before restoring.
PASTE_RESTORE_DELAY_S = 0.3
#: How long closing waits for queued finals to be typed / copied before giving up on them (reported).
CLOSE_TIMEOUT_S = 30.0
#: What typing does with newlines unless --type-newlines: one space for each (same length, see above).
_NEWLINES_AS_SPACES = str.maketrans({"\n": " ", "\r": " "})
NEWLINE_NOTICE = ("streamer: a new line was typed as a space (Return is pressed only with --type-newlines: "
                  "in a terminal, Return runs the line)")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # sys.stderr looked up now: the TUI redirects it


def _status(msg: str) -> None:
    """Start-up information for a person watching; like the core's, only when stderr is a terminal."""
    if sys.stderr.isatty():
        _stderr(msg)


@dataclass(frozen=True)
class DesktopOptions:
    clipboard: str = "off"
    type: bool = False
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    commands: Path | None = None
    commands_only: bool = False
    #: Type newlines as Return key presses (default: as spaces, since Return runs the line in a terminal).
    type_newlines: bool = False
    #: --clipboard paste: the chord that pastes (--paste-keys).
    paste_keys: str = DEFAULT_PASTE_KEYS

    @property
    def dictating(self) -> bool:
        return not self.commands_only and (self.clipboard != "off" or self.type)


_STOP = object()  # the queue's end marker (identity-compared; no final can be it)


class DesktopSink:
    """handle(event) / close(), like the file sinks. `process(text, end_s)` does the work synchronously."""

    def __init__(self, options: DesktopOptions, clipboard: Clipboard | None = None, typer: Typer | None = None,
                 commands: CommandSet | None = None, say: Callable[[str], None] = _stderr,
                 runner: ProgramRunner | None = None) -> None:
        if options.clipboard not in CLIPBOARD_MODES:
            raise ConfigError(f"clipboard mode must be one of {', '.join(CLIPBOARD_MODES)}, not {options.clipboard!r}")
        self.options = options
        self.clipboard = clipboard if options.dictating and options.clipboard != "off" else None
        self.typer = typer
        #: Where command matches and warnings go (stderr; the caption UI replaces it while it owns the screen).
        self.notify = say
        self.dictation = Dictation(options.shaping) if options.dictating else None
        self.runner = runner or ProgramRunner(self.say)
        self.router = None
        if commands is not None:
            self.router = CommandRouter(commands, insert=self._insert, press=self._press, start=self.runner.start,
                                        say=self.say, report_misses=options.commands_only)
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self._newline_noticed = False
        self.processed = 0

    def say(self, message: str) -> None:
        self.notify(message)

    @property
    def hotwords(self) -> tuple[str, ...]:
        return self.router.commands.phrases if self.router else ()

    # -- sink interface (worker thread) --------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        if isinstance(event, FinalEvent) and event.text.strip():
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="desktop-outputs", daemon=True)
                self._thread.start()
            self._queue.put((event.text, event.end_s))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.say(f"streamer: warning: {self._queue.qsize()} finals were still waiting for the clipboard / "
                     "typing when streamer stopped")

    # -- the desktop thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            text, end_s = item
            try:
                self.process(text, end_s)
            except Exception as exc:  # never let one bad utterance stop dictation
                log.debug("desktop output failed", exc_info=True)
                self._warn(f"dictation: {exc}")

    def process(self, text: str, end_s: float) -> None:
        """One final: a command, or dictation."""
        self.processed += 1
        if self.router is not None and self.router.handle(text, end_s).consumed:
            return
        if self.dictation is not None:
            self._apply(self.dictation.feed(text))

    def _apply(self, update: DictationUpdate) -> None:
        if not update.changed:
            return
        if self.clipboard is not None and self.options.clipboard == "paste":
            self._paste_edits(update)
        elif self.clipboard is not None:
            content = update.document if self.options.clipboard == "append" else update.latest
            self._guard(self.clipboard.copy, content)
        if self.typer is not None and self.options.type:
            for edit in update.edits:
                if isinstance(edit, Delete):
                    self._guard(self.typer.backspace, edit.chars)
                elif isinstance(edit, Insert):
                    self._type(edit.text)

    def _paste_edits(self, update: DictationUpdate) -> None:
        """--clipboard paste: each insert is copied and pasted with the paste key, then the clipboard gets
        back what it held before (text only; Unicode kept); a deletion ("scratch that") is backspaces."""
        assert self.clipboard is not None and self.typer is not None
        for edit in update.edits:
            if isinstance(edit, Delete):
                self._guard(self.typer.backspace, edit.chars)
            elif isinstance(edit, Insert) and edit.text:
                self._guard(self.paste, edit.text)

    def paste(self, text: str) -> None:
        """Copy `text`, press the paste key, put the clipboard back (StreamerError when a tool fails)."""
        assert self.clipboard is not None and self.typer is not None
        if not self.options.type_newlines and ("\n" in text or "\r" in text):
            text = text.translate(_NEWLINES_AS_SPACES)  # pasted into a terminal, a newline runs the line
            if not self._newline_noticed:
                self._newline_noticed = True
                self.say(NEWLINE_NOTICE.replace("typed", "pasted"))
        previous = self.clipboard.paste()  # None: empty, or not text (an image): nothing to put back
        self.clipboard.copy(text)
        try:
            self.typer.press(self.options.paste_keys)
        finally:
            if previous is not None:
                time.sleep(PASTE_RESTORE_DELAY_S)
                self.clipboard.copy(previous)

    def _insert(self, text: str) -> None:
        """A command's insert action: where dictation goes; typed when nothing is dictated."""
        if self.dictation is not None:
            self._apply(self.dictation.insert(text))
        elif self.typer is not None:
            self._type(text)

    def _type(self, text: str) -> None:
        """Type text; newlines become spaces unless --type-newlines (see the module docstring)."""
        assert self.typer is not None
        if not self.options.type_newlines and ("\n" in text or "\r" in text):
            text = text.translate(_NEWLINES_AS_SPACES)
            if not self._newline_noticed:
                self._newline_noticed = True
                self.say(NEWLINE_NOTICE)
        self._guard(self.typer.type_text, text)

    def _press(self, chord: str) -> None:
        if self.typer is not None:
            self._guard(self.typer.press, chord)

    def _guard(self, fn, arg) -> None:
        try:
            fn(arg)
        except StreamerError as exc:
            self._warn(exc.one_line())

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once per distinct problem, not once per utterance
            self._warned.add(message)
            self.say(f"streamer: warning: {message} (the transcript goes on)")


def build_desktop_sink(options: DesktopOptions, env=None, say: Callable[[str], None] = _stderr,
                       status: Callable[[str], None] = _status) -> DesktopSink | None:
    """The desktop sink for these options, or None when no dictation or commands were asked for. Loads
    the commands file and finds the tools now, so problems are reported before the model loads."""
    if options.commands_only and options.commands is None:
        raise ConfigError("--commands-only needs --commands FILE", "give the TOML file of voice commands")
    if options.commands_only and (options.clipboard != "off" or options.type):
        say("streamer: --commands-only: finals are not dictated (--clipboard / --type have no effect)")
    if options.clipboard == "paste" and options.type and not options.commands_only:
        raise ConfigError("--clipboard paste and --type would both put each final into the window",
                          "give one of them")
    if options.clipboard == "paste":
        try:
            parse_chord(options.paste_keys)
        except ValueError as exc:
            raise ConfigError(f"--paste-keys: {exc}", "e.g. --paste-keys ctrl+shift+v for a terminal") from None
    commands = load_commands(options.commands) if options.commands else None
    clipboard = detect_clipboard(env) if options.dictating and options.clipboard != "off" else None
    typer = None
    purpose = None
    if options.dictating and options.type:
        purpose = "--type"
    elif clipboard is not None and options.clipboard == "paste":
        purpose = "--clipboard paste"
    elif commands is not None:
        keys = next((c for c in commands.commands if c.action.kind == "keys"), None)
        insert = next((c for c in commands.commands if c.action.kind == "insert"), None)
        needing = keys or (insert if not options.dictating else None)
        if needing is not None:
            purpose = f"the {needing.action.kind} action of commands.{needing.name} in {commands.path}"
    if purpose is not None:
        typer = detect_typer(env, purpose=purpose)
    if commands is None and clipboard is None and typer is None:
        return None
    outputs = []
    if clipboard is not None and options.clipboard == "paste":
        assert typer is not None
        outputs.append(f"the focused window (pasted with {options.paste_keys} through {typer.name}; the clipboard "
                       f"is put back after, {clipboard.name})")
    elif clipboard is not None:
        outputs.append(f"the clipboard ({options.clipboard}, {clipboard.name})")
    if typer is not None and options.dictating and options.type:
        outputs.append(f"the focused window ({typer.name})")
    if outputs:
        shaping = "shaped" if options.shaping.enabled else "unshaped"
        typed = ""
        if typer is not None and options.dictating and options.type:
            typed = ("; new lines press Return" if options.type_newlines
                     else "; new lines typed as spaces (--type-newlines presses Return)")
        status(f"streamer: dictation ({shaping}, finals only) into {' and '.join(outputs)}{typed}")
    if commands is not None:
        n = len(commands.commands)
        programs = commands.programs
        status(f"streamer: {n} voice command{'s' if n != 1 else ''} from {commands.path} "
               f"(threshold {commands.threshold:g}){'; commands only, no dictation' if options.commands_only else ''}"
               + (f"; may run {', '.join(programs)}" if programs else ""))
    return DesktopSink(options, clipboard, typer, commands, say)
