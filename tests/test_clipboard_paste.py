"""--clipboard paste for real: an X server (Xvfb), xclip as the clipboard, a Tk text window holding the focus,
xdotool pressing Ctrl+V. Each final is pasted into the window and the clipboard gets back what it held
before, Unicode and all."""

from __future__ import annotations

import shutil

import pytest

from streamer.errors import ConfigError
from streamer.sinks.clipboard import detect_clipboard
from streamer.sinks.desktop import DesktopOptions, build_desktop_sink
from streamer.sinks.dictation import Dictation, ShapingConfig
from test_typing import TextWindow

from desktop_fixtures import read_clipboard, wait_for, xvfb  # noqa: F401

needs_tools = pytest.mark.skipif(not (shutil.which("xdotool") and shutil.which("xclip")),
                                 reason="xdotool and xclip are needed (scripts/setup.sh installs them)")


@pytest.mark.slow
@needs_tools
def test_paste_mode_pastes_each_final_and_restores_the_clipboard(tmp_path, xvfb):
    window = TextWindow(tmp_path, xvfb)
    try:
        before = "kept: café ✓ 日本語\nsecond line"
        detect_clipboard(use_pyperclip=False).copy(before)
        assert read_clipboard(xvfb) == before
        notes: list[str] = []
        sink = build_desktop_sink(DesktopOptions(clipboard="paste"), say=notes.append, status=notes.append)
        assert sink is not None and sink.typer is not None and sink.typer.name == "xdotool"
        assert any("pasted with ctrl+v through xdotool" in n for n in notes), notes

        expected = Dictation(ShapingConfig())
        for spoken in ("hello world period", "naïve café über"):
            sink.process(spoken, 1.0)
            document = expected.feed(spoken).document
            assert window.settled(document) == document
            assert read_clipboard(xvfb) == before  # put back after each paste
    finally:
        window.close()


@pytest.mark.slow
@needs_tools
def test_paste_mode_with_an_empty_clipboard_leaves_the_text(tmp_path, xvfb):
    """Nothing (no text) was in the clipboard: there is nothing to put back, and nothing is lost."""
    window = TextWindow(tmp_path, xvfb)
    try:
        sink = build_desktop_sink(DesktopOptions(clipboard="paste"), say=lambda m: None, status=lambda m: None)
        assert sink is not None
        sink.process("hello", 1.0)
        assert window.settled("Hello") == "Hello"
        assert wait_for(lambda: read_clipboard(xvfb) == "Hello", 5)
    finally:
        window.close()


def test_paste_and_type_together_are_refused():
    with pytest.raises(ConfigError, match="--clipboard paste and --type"):
        build_desktop_sink(DesktopOptions(clipboard="paste", type=True), env={"DISPLAY": ":0"})


def test_a_bad_paste_chord_is_one_line():
    with pytest.raises(ConfigError, match="--paste-keys"):
        build_desktop_sink(DesktopOptions(clipboard="paste", paste_keys="ctrl+"), env={"DISPLAY": ":0"})


def test_the_flags_reach_the_desktop_options():
    from streamer.cli import build_parser
    from streamer.cli.args import desktop_options

    args = build_parser().parse_args(["--clipboard", "paste", "--paste-keys", "ctrl+shift+v"])
    options = desktop_options(args)
    assert options.clipboard == "paste" and options.paste_keys == "ctrl+shift+v"
