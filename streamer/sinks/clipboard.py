"""The system clipboard, for dictation (--clipboard).

Detection asks pyperclip first (it knows macOS, Windows, WSL, Klipper and Qt). Where pyperclip picks one of
the Linux command-line tools (xclip, xsel, wl-copy) streamer runs that same tool itself: those tools fork a
process that keeps serving the selection, and pyperclip starts them with our stdout inherited, so
`streamer --clipboard | tee log` would never see end-of-file until something else took the clipboard. Without
pyperclip the tools are found directly: wl-copy on Wayland, xclip or xsel on X11. No tool -> one SinkError.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping

from streamer.errors import SinkError

#: A clipboard tool that has not taken the text by then is stuck (no X server answering, say).
CLIPBOARD_TIMEOUT_S = 5.0
#: xclip (and its kin) fork before they own the selection: copy() reads the text back until it is there, so
#: the clipboard holds it when copy() returns and two quick copies cannot land in the wrong order.
CONFIRM_TIMEOUT_S = 1.0
CONFIRM_POLL_S = 0.01

#: pyperclip's copy functions that are these command-line tools, and how streamer runs them itself.
_TOOL_ARGV: dict[str, tuple[str, ...]] = {
    "wl-copy": ("wl-copy",),
    "xclip": ("xclip", "-selection", "clipboard", "-in"),
    "xsel": ("xsel", "--clipboard", "--input"),
}
_PYPERCLIP_TOOLS = {"copy_wl": "wl-copy", "copy_xclip": "xclip", "copy_xsel": "xsel"}
#: How each tool's text is read back: (program, arguments).
_PASTE_ARGV: dict[str, tuple[str, ...]] = {
    "wl-copy": ("wl-paste", "--no-newline"),
    "xclip": ("xclip", "-selection", "clipboard", "-out"),
    "xsel": ("xsel", "--clipboard", "--output"),
}

INSTALL_HINT = "install xclip or xsel (X11) or wl-clipboard (Wayland), or pip install pyperclip"


class ToolClipboard:
    """A command-line clipboard tool fed through stdin; its stdout and stderr never hold our pipes."""

    def __init__(self, argv: tuple[str, ...], paste_argv: tuple[str, ...] | None = None) -> None:
        self.argv = argv
        self.name = os.path.basename(argv[0])
        self.paste_argv = paste_argv

    def paste(self) -> str | None:
        if self.paste_argv is None:
            return None
        try:
            proc = subprocess.run(list(self.paste_argv), capture_output=True, timeout=CLIPBOARD_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None

    def _confirm(self, text: str) -> None:
        if self.paste_argv is None:
            return
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        while self.paste() != text:
            if time.monotonic() > deadline:
                raise SinkError(f"clipboard: {self.name} did not take the text within {CONFIRM_TIMEOUT_S:g} s")
            time.sleep(CONFIRM_POLL_S)

    def copy(self, text: str) -> None:
        argv = list(self.argv)
        if self.name == "wl-copy" and not text:
            argv.append("--clear")  # wl-copy with empty input keeps waiting for a paste otherwise
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                        close_fds=True)
            except OSError as exc:
                raise SinkError(f"clipboard: cannot run {self.name}: {exc.strerror}", INSTALL_HINT) from exc
            try:
                proc.communicate(text.encode("utf-8"), timeout=CLIPBOARD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise SinkError(f"clipboard: {self.name} did not finish within {CLIPBOARD_TIMEOUT_S:g} s") from None
            if proc.returncode != 0:
                err.seek(0)
                detail = err.read().decode("utf-8", "replace").strip().splitlines()
                raise SinkError(f"clipboard: {self.name} failed (exit {proc.returncode})"
                                + (f": {detail[0]}" if detail else ""))
        self._confirm(text)


class PyperclipClipboard:
    def __init__(self, copy_fn: Callable[[str], None], paste_fn: Callable[[], str] | None = None) -> None:
        self._copy = copy_fn
        self._paste = paste_fn
        self.name = f"pyperclip ({getattr(copy_fn, '__name__', 'copy')})"

    def paste(self) -> str | None:
        if self._paste is None:
            return None
        try:
            return self._paste()
        except Exception:  # pyperclip raises its own exception types and OS errors
            return None

    def copy(self, text: str) -> None:
        try:
            self._copy(text)
        except Exception as exc:  # pyperclip raises its own exception types and OS errors
            raise SinkError(f"clipboard: {self.name} failed: {exc}") from exc


Clipboard = ToolClipboard | PyperclipClipboard


def _pyperclip_choice():
    """pyperclip's (copy, paste) functions for this system, or None when pyperclip is absent or found nothing."""
    try:
        import pyperclip
    except ImportError:
        return None
    try:
        copy_fn, paste_fn = pyperclip.determine_clipboard()
    except Exception:  # a broken Qt or similar: fall back to the tools
        return None
    if not copy_fn:  # pyperclip's "no clipboard" stub is falsy
        return None
    return copy_fn, paste_fn


def tool_clipboard(name: str, which: Callable[[str], str | None] = shutil.which) -> ToolClipboard | None:
    """A ToolClipboard for xclip, xsel or wl-copy when it is installed (with its read-back when that is)."""
    path = which(name)
    if not path:
        return None
    paste_prog, *paste_args = _PASTE_ARGV[name]
    paste_path = which(paste_prog)
    return ToolClipboard((path, *_TOOL_ARGV[name][1:]), (paste_path, *paste_args) if paste_path else None)


def find_tool(env: Mapping[str, str], which: Callable[[str], str | None] = shutil.which) -> tuple[str, ...] | None:
    """The clipboard tool for this session: wl-copy on Wayland, xclip or xsel on X11."""
    candidates: list[str] = []
    if env.get("WAYLAND_DISPLAY"):
        candidates.append("wl-copy")
    if env.get("DISPLAY"):
        candidates += ["xclip", "xsel"]
    for name in candidates:
        path = which(name)
        if path:
            return (path, *_TOOL_ARGV[name][1:])
    return None


def detect_clipboard(env: Mapping[str, str] | None = None, use_pyperclip: bool = True,
                     which: Callable[[str], str | None] = shutil.which) -> Clipboard:
    """The clipboard to use, found at start; SinkError (one line) when there is none."""
    env = os.environ if env is None else env
    choice = _pyperclip_choice() if use_pyperclip else None
    if choice is not None:
        copy_fn, paste_fn = choice
        tool = _PYPERCLIP_TOOLS.get(getattr(copy_fn, "__name__", ""))
        if tool is None:
            return PyperclipClipboard(copy_fn, paste_fn)
        board = tool_clipboard(tool, which)
        if board is not None:
            return board
    argv = find_tool(env, which)
    if argv is not None:
        return tool_clipboard(os.path.basename(argv[0]), which) or ToolClipboard(argv)
    if sys.platform.startswith("linux") and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        raise SinkError("--clipboard needs a graphical session, but neither DISPLAY nor WAYLAND_DISPLAY is set",
                        "run streamer inside your desktop session, or leave out --clipboard")
    raise SinkError("--clipboard found no clipboard tool", INSTALL_HINT)
