"""The clipboard for real: an X server (Xvfb), xclip, and streamer replaying a file with --clipboard; then
the clipboard is read back with `xclip -o -selection clipboard`."""

from __future__ import annotations

import shutil
import sys

import pytest

from streamer.errors import SinkError
from streamer.sinks.clipboard import ToolClipboard, detect_clipboard, find_tool
from streamer.sinks.dictation import Dictation, ShapingConfig

from desktop_fixtures import demo_model_or_skip, espeak_clip, read_clipboard, run_streamer, speech_clip, tiny_model, xvfb  # noqa: F401

needs_xclip = pytest.mark.skipif(not shutil.which("xclip"), reason="xclip is not installed (scripts/setup.sh installs it)")


@needs_xclip
@pytest.mark.slow
@pytest.mark.parametrize("mode,shaping", [("replace", True), ("append", False)])
def test_file_replay_puts_finals_into_the_clipboard(tmp_path, xvfb, tiny_model, speech_clip, mode, shaping):
    args = ["--file", str(speech_clip), "--no-tui", "--model", str(tiny_model), "--clipboard", mode]
    if not shaping:
        args.append("--no-shaping")
    # capture_output: had a clipboard tool kept our stdout pipe (pyperclip's xclip does), this would time out
    out = run_streamer(args, tmp_path, timeout=120, DISPLAY=xvfb)
    assert out.returncode == 0, out.stderr
    finals = out.stdout.splitlines()
    assert finals, "the tiny model produced no finals"
    dictation = Dictation(ShapingConfig(enabled=shaping))
    updates = [dictation.feed(f) for f in finals]
    expected = updates[-1].latest if mode == "replace" else updates[-1].document
    assert read_clipboard(xvfb) == expected
    if not shaping:
        assert read_clipboard(xvfb) == " ".join(finals)


@needs_xclip
@pytest.mark.slow
def test_demo_model_dictation_into_the_clipboard(tmp_path, xvfb):
    demo = demo_model_or_skip()
    from rapidfuzz import fuzz

    # Phrases the weak demo model (15% CER) gets nearly right; spoken punctuation ("period" comes out as
    # "PARIED") is covered by the hand-written final sequences in tests/test_dictation.py.
    clip = espeak_clip(tmp_path / "dictate.wav", ["start recording", "show the time"])
    out = run_streamer(["--file", str(clip), "--no-tui", "--model", str(demo), "--clipboard", "append"], tmp_path,
                       DISPLAY=xvfb)
    assert out.returncode == 0, out.stderr
    text = read_clipboard(xvfb)
    dictation = Dictation()
    for f in out.stdout.splitlines():
        dictation.feed(f)
    assert text == dictation.document
    assert fuzz.ratio(text.lower(), "start recording show the time") >= 80, text


@pytest.mark.slow
@needs_xclip
def test_tool_clipboard_round_trip_and_unicode(xvfb):
    board = detect_clipboard()
    assert isinstance(board, ToolClipboard) and board.name == "xclip"  # pyperclip's choice, run safely
    board.copy("Grüße, \"quoted\" $(not run) ; ok\n")
    assert read_clipboard(xvfb) == "Grüße, \"quoted\" $(not run) ; ok\n"
    board.copy("")
    assert read_clipboard(xvfb) == ""


@pytest.mark.slow
@needs_xclip
def test_start_up_line_names_the_tool(xvfb):
    from streamer.sinks.desktop import DesktopOptions, build_desktop_sink

    lines: list[str] = []
    sink = build_desktop_sink(DesktopOptions(clipboard="append"), status=lines.append)
    assert sink is not None and sink.clipboard is not None
    assert lines == ["streamer: dictation (shaped, finals only) into the clipboard (append, xclip)"]


@pytest.mark.slow
@needs_xclip
def test_a_dead_display_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":4321")
    with pytest.raises(SinkError) as err:
        ToolClipboard(find_tool({"DISPLAY": ":4321"})).copy("x")
    assert "xclip failed" in err.value.one_line() and "\n" not in err.value.one_line()


def test_detection_order_and_clear_lines_when_nothing_is_there():
    tools = {"xclip": "/usr/bin/xclip", "xsel": "/usr/bin/xsel", "wl-copy": "/usr/bin/wl-copy"}
    which = tools.get
    assert find_tool({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, which)[0] == "/usr/bin/wl-copy"
    assert find_tool({"DISPLAY": ":0"}, which) == ("/usr/bin/xclip", "-selection", "clipboard", "-in")
    assert find_tool({"DISPLAY": ":0"}, {"xsel": "/bin/xsel"}.get) == ("/bin/xsel", "--clipboard", "--input")
    if sys.platform.startswith("linux"):
        with pytest.raises(SinkError, match="neither DISPLAY nor WAYLAND_DISPLAY"):
            detect_clipboard({}, use_pyperclip=False, which=which)
    with pytest.raises(SinkError) as err:
        detect_clipboard({"DISPLAY": ":0"}, use_pyperclip=False, which=lambda _: None)
    assert err.value.one_line() == ("--clipboard found no clipboard tool (install xclip or xsel (X11) or "
                                    "wl-clipboard (Wayland), or pip install pyperclip)")


@pytest.mark.slow
def test_cli_reports_a_missing_clipboard_before_loading_the_model(tmp_path, speech_clip):
    out = run_streamer(["--file", str(speech_clip), "--no-tui", "--model", "/nonexistent/model", "--clipboard"],
                       tmp_path, timeout=60, DISPLAY="")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "streamer: error: --clipboard needs a graphical session, but neither DISPLAY nor WAYLAND_DISPLAY is set "
        "(run streamer inside your desktop session, or leave out --clipboard)"]
