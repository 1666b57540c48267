"""Typing into the focused window (--type, and the keys / insert actions of voice commands).

Tools: xdotool on X11; wtype, else ydotool, on Wayland (ydotool needs its ydotoold daemon running; its key
syntax here is the 1.x one of Linux key codes). Detected at start; none -> one SinkError. Every tool runs
from an argument list without a shell; text is passed as one argument after "--" (xdotool) or on stdin
(wtype, ydotool), so nothing in it is ever parsed as an option or a command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence

from streamer.errors import SinkError

#: xdotool's pause between typed characters; its own default of 12 ms drops characters in some apps.
TYPE_DELAY_MS = 8
#: One typing call longer than this is stuck (a tool waiting on a lost display, say).
TYPE_TIMEOUT_S = 30.0

INSTALL_HINT = "install xdotool (X11) or wtype / ydotool (Wayland)"

MODIFIERS = {"ctrl": "ctrl", "control": "ctrl", "shift": "shift", "alt": "alt", "super": "super",
             "meta": "super", "win": "super", "logo": "super"}
_KEY_NAME = re.compile(r"^[A-Za-z0-9_]+$")

#: Linux input event codes for ydotool 1.x (`ydotool key 29:1 31:1 31:0 29:0` is ctrl+s).
_YDOTOOL_CODES = {
    "ctrl": 29, "shift": 42, "alt": 56, "super": 125,
    "Escape": 1, "BackSpace": 14, "Tab": 15, "Return": 28, "space": 57, "minus": 12, "equal": 13,
    "bracketleft": 26, "bracketright": 27, "semicolon": 39, "apostrophe": 40, "grave": 41, "backslash": 43,
    "comma": 51, "period": 52, "slash": 53, "Home": 102, "Up": 103, "Page_Up": 104, "Left": 105,
    "Right": 106, "End": 107, "Down": 108, "Page_Down": 109, "Insert": 110, "Delete": 111,
    **{f"F{i}": 58 + i for i in range(1, 11)}, "F11": 87, "F12": 88,
    **{str(d): 1 + d for d in range(1, 10)}, "0": 11,
    **dict(zip("qwertyuiop", range(16, 26))), **dict(zip("asdfghjkl", range(30, 39))),
    **dict(zip("zxcvbnm", range(44, 51))),
}


def parse_chord(chord: str) -> tuple[tuple[str, ...], str]:
    """'ctrl+shift+t' -> (('ctrl', 'shift'), 't'). ValueError (with the reason) when malformed."""
    parts = [p.strip() for p in chord.split("+")]
    if not parts or not all(parts):
        raise ValueError(f"malformed key chord {chord!r} (expected e.g. 'ctrl+s' or 'Return')")
    *mods, key = parts
    unknown = [m for m in mods if m.lower() not in MODIFIERS]
    if unknown:
        raise ValueError(f"unknown modifier {unknown[0]!r} in {chord!r} (use {', '.join(sorted(set(MODIFIERS)))})")
    if not _KEY_NAME.match(key):
        raise ValueError(f"bad key name {key!r} in {chord!r} (use a letter, digit or key name such as Return, Tab, F5)")
    return tuple(MODIFIERS[m.lower()] for m in mods), key


class Typer:
    """One typing tool. Subclasses only build argument lists; `run` executes them (no shell)."""

    name = "typer"

    def __init__(self, path: str) -> None:
        self.path = path

    # argument lists (pure, unit-tested) -------------------------------------------------------------------
    def text_command(self, text: str) -> tuple[list[str], str | None]:
        raise NotImplementedError

    def keys_command(self, chord: str) -> list[str]:
        raise NotImplementedError

    def backspace_command(self, count: int) -> list[str]:
        raise NotImplementedError

    # actions ---------------------------------------------------------------------------------------------
    def type_text(self, text: str) -> None:
        if text:
            self.run(*self.text_command(text))

    def press(self, chord: str) -> None:
        self.run(self.keys_command(chord))

    def backspace(self, count: int) -> None:
        if count > 0:
            self.run(self.backspace_command(count))

    def run(self, argv: Sequence[str], stdin_text: str | None = None) -> None:
        try:
            proc = subprocess.run(list(argv), input=None if stdin_text is None else stdin_text.encode("utf-8"),
                                  stdin=subprocess.DEVNULL if stdin_text is None else None,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TYPE_TIMEOUT_S,
                                  shell=False, check=False)
        except OSError as exc:
            raise SinkError(f"typing: cannot run {self.name}: {exc.strerror}", INSTALL_HINT) from exc
        except subprocess.TimeoutExpired:
            raise SinkError(f"typing: {self.name} did not finish within {TYPE_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SinkError(f"typing: {self.name} failed (exit {proc.returncode})" + (f": {detail[0]}" if detail else ""))


class XdotoolTyper(Typer):
    name = "xdotool"

    def text_command(self, text: str) -> tuple[list[str], str | None]:
        return [self.path, "type", "--clearmodifiers", "--delay", str(TYPE_DELAY_MS), "--", text], None

    def keys_command(self, chord: str) -> list[str]:
        mods, key = parse_chord(chord)
        return [self.path, "key", "--clearmodifiers", "--", "+".join((*mods, key))]

    def backspace_command(self, count: int) -> list[str]:
        return [self.path, "key", "--clearmodifiers", "--delay", str(TYPE_DELAY_MS), "--repeat", str(count),
                "--", "BackSpace"]


class WtypeTyper(Typer):
    name = "wtype"
    _MODS = {"ctrl": "ctrl", "shift": "shift", "alt": "alt", "super": "logo"}

    def text_command(self, text: str) -> tuple[list[str], str | None]:
        return [self.path, "-"], text  # "-": read the text from stdin

    def keys_command(self, chord: str) -> list[str]:
        mods, key = parse_chord(chord)
        argv = [self.path]
        for m in mods:
            argv += ["-M", self._MODS[m]]
        argv += ["-k", key]
        for m in reversed(mods):
            argv += ["-m", self._MODS[m]]
        return argv

    def backspace_command(self, count: int) -> list[str]:
        return [self.path] + ["-k", "BackSpace"] * count


class YdotoolTyper(Typer):
    name = "ydotool"

    def text_command(self, text: str) -> tuple[list[str], str | None]:
        return [self.path, "type", "--file", "-"], text

    @staticmethod
    def _code(key: str) -> int:
        code = _YDOTOOL_CODES.get(key, _YDOTOOL_CODES.get(key.lower()) if len(key) == 1 else None)
        if code is None:
            raise ValueError(f"ydotool: no key code known for {key!r}")
        return code

    def keys_command(self, chord: str) -> list[str]:
        mods, key = parse_chord(chord)
        codes = [self._code(m) for m in mods] + [self._code(key)]
        return [self.path, "key"] + [f"{c}:1" for c in codes] + [f"{c}:0" for c in reversed(codes)]

    def backspace_command(self, count: int) -> list[str]:
        return [self.path, "key"] + ["14:1", "14:0"] * count


_TYPERS = {"xdotool": XdotoolTyper, "wtype": WtypeTyper, "ydotool": YdotoolTyper}


def detect_typer(env: Mapping[str, str] | None = None, which: Callable[[str], str | None] = shutil.which,
                 purpose: str = "--type") -> Typer:
    """The typing tool for this session; SinkError (one line, naming `purpose`) when there is none."""
    env = os.environ if env is None else env
    wayland = bool(env.get("WAYLAND_DISPLAY")) or env.get("XDG_SESSION_TYPE") == "wayland"
    x11 = bool(env.get("DISPLAY"))
    # On Wayland, xdotool reaches only XWayland windows: native Wayland tools first.
    order = (["wtype", "ydotool"] if wayland else []) + (["xdotool"] if x11 else [])
    for name in order:
        path = which(name)
        if path:
            return _TYPERS[name](path)
    if not wayland and not x11:
        raise SinkError(f"{purpose} needs a graphical session, but neither DISPLAY nor WAYLAND_DISPLAY is set",
                        "run streamer inside your desktop session")
    session = "Wayland" if wayland else "X11"
    raise SinkError(f"{purpose} found no tool to type with in this {session} session", INSTALL_HINT)
