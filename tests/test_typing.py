"""Typing for real: an X server (Xvfb), a Tk text window holding the focus, xdotool; the window's content is
read back. Argument lists for wtype / ydotool (not installable here) are checked as pure logic."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.errors import SinkError
from streamer.sinks.dictation import Delete, Dictation, Insert, ShapingConfig
from streamer.sinks.typing import WtypeTyper, XdotoolTyper, YdotoolTyper, detect_typer, parse_chord

from desktop_fixtures import run_streamer, speech_clip, tiny_model, wait_for, xvfb  # noqa: F401
from helpers import RecordingTyper

needs_xdotool = pytest.mark.skipif(not shutil.which("xdotool"), reason="xdotool is not installed (scripts/setup.sh)")

TEXT_WINDOW = r'''
import sys, tkinter as tk
out = sys.argv[1]
root = tk.Tk()
root.geometry("600x300+0+0")
text = tk.Text(root)
text.pack(fill="both", expand=True)
def ready():
    text.focus_force()
    open(out + ".ready", "w").close()
def dump():
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(text.get("1.0", "end-1c"))
    import os; os.replace(out + ".tmp", out)
    root.after(100, dump)
root.after(300, ready)
root.after(100, dump)
root.after(120000, root.destroy)
root.mainloop()
'''


class TextWindow:
    def __init__(self, tmp: Path, display: str) -> None:
        pytest.importorskip("tkinter")
        script = tmp / "window.py"
        script.write_text(TEXT_WINDOW)
        self.out = tmp / "window.txt"
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.out)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for(Path(str(self.out) + ".ready").exists, 20):
            self.close()
            pytest.fail("the Tk test window did not come up")

    def text(self) -> str:
        return self.out.read_text(encoding="utf-8") if self.out.exists() else ""

    def settled(self, expected: str) -> str:
        wait_for(lambda: self.text() == expected, 10)
        return self.text()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def window(tmp_path, xvfb):
    w = TextWindow(tmp_path, xvfb)
    yield w
    w.close()


@pytest.mark.slow
@needs_xdotool
def test_dictation_edits_typed_with_xdotool(window):
    typer = detect_typer()
    assert isinstance(typer, XdotoolTyper)
    dictation = Dictation()
    for final in ["HELLO WORLD PERIOD", "THIS IS WRONG", "SCRATCH THAT", "NEW LINE -DASH AND $(ECHO) ; OK"]:
        for edit in dictation.feed(final).edits:
            if isinstance(edit, Delete):
                typer.backspace(edit.chars)
            else:
                assert isinstance(edit, Insert)
                typer.type_text(edit.text)
    assert window.settled(dictation.document) == "Hello world.\n-dash and $(echo) ; ok"


@pytest.mark.slow
@needs_xdotool
def test_key_chords_with_xdotool(window):
    typer = detect_typer()
    typer.type_text("ab")
    typer.press("Return")
    typer.press("shift+c")
    assert window.settled("ab\nC") == "ab\nC"


@needs_xdotool
@pytest.mark.slow
def test_file_replay_types_finals_into_the_focused_window(tmp_path, window, tiny_model, speech_clip):
    out = run_streamer(["--file", str(speech_clip), "--no-tui", "--model", str(tiny_model), "--type"], tmp_path,
                       timeout=120)
    assert out.returncode == 0, out.stderr
    finals = out.stdout.splitlines()
    assert finals
    dictation = Dictation(ShapingConfig())
    for f in finals:
        dictation.feed(f)
    assert window.settled(dictation.document) == dictation.document


def test_argument_lists_never_need_a_shell():
    text = "-n $(rm -rf ~) ; `x`"
    assert XdotoolTyper("/x").text_command(text) == (["/x", "type", "--clearmodifiers", "--delay", "8", "--", text], None)
    assert WtypeTyper("/w").text_command(text) == (["/w", "-"], text)
    assert YdotoolTyper("/y").text_command(text) == (["/y", "type", "--file", "-"], text)
    assert XdotoolTyper("/x").keys_command("ctrl+shift+t") == ["/x", "key", "--clearmodifiers", "--", "ctrl+shift+t"]
    assert WtypeTyper("/w").keys_command("ctrl+super+s") == ["/w", "-M", "ctrl", "-M", "logo", "-k", "s",
                                                             "-m", "logo", "-m", "ctrl"]
    assert YdotoolTyper("/y").keys_command("ctrl+s") == ["/y", "key", "29:1", "31:1", "31:0", "29:0"]
    assert YdotoolTyper("/y").backspace_command(2) == ["/y", "key", "14:1", "14:0", "14:1", "14:0"]
    assert WtypeTyper("/w").backspace_command(2) == ["/w", "-k", "BackSpace", "-k", "BackSpace"]


@pytest.mark.parametrize("chord", ["", "ctrl+", "+s", "hyper+s", "ctrl+s;ls", "ctrl+$(x)", "a b"])
def test_bad_chords(chord):
    with pytest.raises(ValueError):
        parse_chord(chord)


def test_detection():
    tools = {"xdotool": "/usr/bin/xdotool", "wtype": "/usr/bin/wtype", "ydotool": "/usr/bin/ydotool"}
    assert detect_typer({"DISPLAY": ":0"}, tools.get).name == "xdotool"
    assert detect_typer({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, tools.get).name == "wtype"
    assert detect_typer({"WAYLAND_DISPLAY": "w"}, {"ydotool": "/y", "xdotool": "/x"}.get).name == "ydotool"
    with pytest.raises(SinkError, match="--type found no tool to type with in this X11 session"):
        detect_typer({"DISPLAY": ":0"}, lambda _: None)
    with pytest.raises(SinkError, match="--type needs a graphical session"):
        detect_typer({}, tools.get)


# -- newlines: Return runs the line in a terminal, so it is pressed only with --type-newlines ---------------


class FakeClipboard:
    name = "fake"

    def __init__(self) -> None:
        self.content = ""

    def copy(self, text):
        self.content = text


def desktop(type_newlines: bool):
    from streamer.sinks.desktop import DesktopOptions, DesktopSink

    said: list[str] = []
    typer, clipboard = RecordingTyper(), FakeClipboard()
    sink = DesktopSink(DesktopOptions(clipboard="append", type=True, type_newlines=type_newlines),
                       clipboard=clipboard, typer=typer, say=said.append)
    return sink, typer, clipboard, said


def test_a_spoken_new_line_is_typed_as_a_space_by_default():
    sink, typer, clipboard, said = desktop(type_newlines=False)
    for final in ["HELLO NEW LINE WORLD", "NEW PARAGRAPH BYE", "SCRATCH THAT", "AGAIN NEW LINE"]:
        sink.process(final, 1.0)
    typed = [c for c in typer.calls if c[0] == "type"]
    assert all("\n" not in str(text) and "\r" not in str(text) for _, text in typed)
    assert typer.calls == [("type", "Hello World"), ("type", "  Bye"), ("backspace", len("\n\nBye")),
                           ("type", " again ")]  # one character for one: backspaces still match
    assert clipboard.content == "Hello\nWorld again\n"  # the clipboard keeps the real newlines
    notices = [s for s in said if "new line was typed as a space" in s]
    assert len(notices) == 1 and "--type-newlines" in notices[0]  # said once, not once per utterance


def test_type_newlines_presses_return():
    sink, typer, _, said = desktop(type_newlines=True)
    sink.process("HELLO NEW LINE WORLD", 1.0)
    assert typer.calls == [("type", "Hello\nWorld")] and not said


def test_command_insert_text_follows_the_same_rule(tmp_path):
    from streamer.sinks.commands import load_commands
    from streamer.sinks.desktop import DesktopOptions, DesktopSink

    path = tmp_path / "c.toml"
    path.write_text('[commands.sign]\nphrase = "insert signature"\ninsert = "\\nBest regards,\\nAda"\n')
    path.chmod(0o600)
    typer = RecordingTyper()
    sink = DesktopSink(DesktopOptions(commands=path, commands_only=True), typer=typer, commands=load_commands(path),
                       say=lambda _: None)
    sink.process("INSERT SIGNATURE", 1.0)
    assert typer.calls == [("type", " Best regards, Ada")]


def test_the_start_up_line_says_how_new_lines_are_typed(monkeypatch):
    from streamer.sinks import desktop as d

    monkeypatch.setattr(d, "detect_typer", lambda env, purpose: RecordingTyper())
    for flag, expected in [(False, "new lines typed as spaces (--type-newlines presses Return)"),
                           (True, "new lines press Return")]:
        lines: list[str] = []
        d.build_desktop_sink(d.DesktopOptions(type=True, type_newlines=flag), env={}, status=lines.append)
        assert any(expected in line for line in lines), lines


def test_the_flag_reaches_the_desktop_options():
    from streamer.cli import build_parser
    from streamer.cli.args import desktop_options

    assert desktop_options(build_parser().parse_args(["--type"])).type_newlines is False
    assert desktop_options(build_parser().parse_args(["--type", "--type-newlines"])).type_newlines is True


@pytest.mark.slow
@needs_xdotool
@pytest.mark.parametrize("type_newlines,expected", [(False, "Hello World. Bye"), (True, "Hello\nWorld. Bye")])
def test_new_lines_in_a_real_window(window, type_newlines, expected):
    from streamer.sinks.desktop import DesktopOptions, DesktopSink

    sink = DesktopSink(DesktopOptions(type=True, type_newlines=type_newlines), typer=detect_typer(),
                       say=lambda _: None)
    for final in ["HELLO NEW LINE WORLD PERIOD", "BYE"]:
        sink.process(final, 1.0)
    assert window.settled(expected) == expected
