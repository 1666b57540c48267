"""The caption UI: the pure view on a capture console (plain text, several sizes), the state it renders, and
the real program in a real terminal (tmux): captions appear, tentative text is replaced, p / c / q work, and
the terminal is left clean."""

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from streamer.core.events import FinalEvent, LevelEvent, PartialEvent, StatsEvent, VadEvent
from streamer.ui import CaptionUI
from streamer.ui.state import MAX_FINALS, LiveState
from streamer.ui.view import render

ROOT = Path(__file__).resolve().parents[1]
MODEL = "demo (6.9 M params, cpu, float32)"
MIC = "mic: USB Microphone @ 48000 Hz"


def screen(state: LiveState, width: int, height: int) -> list[str]:
    console = Console(file=io.StringIO(), record=True, width=width, height=height, color_system=None,
                      legacy_windows=False)
    console.print(render(state.snapshot()))
    lines = console.export_text().split("\n")
    assert lines[-1] == ""
    return [line.rstrip() for line in lines[:-1]]


def screen_at(state: LiveState, width: int, height: int, now_s: float) -> list[str]:
    console = Console(file=io.StringIO(), record=True, width=width, height=height, color_system=None)
    console.print(render(state.snapshot(now_s)))
    return [line.rstrip() for line in console.export_text().split("\n")[:-1]]


def body(lines: list[str]) -> list[str]:
    """The caption area: between the header and the rule, blank lines dropped."""
    rule = next(i for i, line in enumerate(lines) if line.startswith("───"))
    return [line for line in lines[1:rule] if line and not line.startswith(("mic:", "demo", " streamer"))]


def talk(state: LiveState, t0: float = 1000.0) -> None:
    """One finished utterance and a second one under way, as the pipeline would report them."""
    state.apply(LevelEvent(0.05, t0 + 0.05, -30.0, -20.0))
    state.apply(VadEvent(0.3, t0 + 0.3, True, 0))
    state.apply(PartialEvent(0.9, t0 + 0.95, 0, "open the", " do", 0.54, 0.86))
    state.apply(FinalEvent(2.0, t0 + 2.05, 0, "open the door", (), 0.0, 1.5))
    state.apply(VadEvent(2.0, t0 + 2.05, False, 0))
    state.apply(VadEvent(2.4, t0 + 2.45, True, 1))
    state.apply(LevelEvent(2.9, t0 + 2.9, -18.0, -6.0))
    state.apply(StatsEvent(3.0, t0 + 3.0, 0.2, 35.0, 0.02, 0, 0, 3.0))


# -- the view on a capture console ---------------------------------------------------------------------------
def test_golden_screen_40_columns():
    state = LiveState(MODEL, MIC)
    talk(state)
    state.apply(PartialEvent(3.2, 1003.25, 1, "the weather", " is ni", 2.84, 3.16))
    assert screen(state, 40, 12) == [
        " streamer",
        "demo (6.9 M params, cpu, float32)",
        "mic: USB Microphone @ 48000 Hz",
        "",
        "",
        "open the door",
        "› the weather is ni",
        "────────────────────────────────────────",
        "● speech  ████████████████░░░░░│░ -18 dB",
        "RTF 0.20 · latency – · lag 0.02 s",
        "dropped 0",
        "q quit · p pause · c clear",
    ]


@pytest.mark.parametrize("width, height", [(120, 30), (80, 24), (40, 12), (30, 10), (20, 8)])
def test_layout_fits_the_terminal(width, height):
    state = LiveState(MODEL, MIC)
    talk(state)
    for i in range(40):
        state.apply(FinalEvent(4.0 + i, 1004.0 + i, 2 + i, f"caption number {i} with several words in it", (),
                               3.0 + i, 3.9 + i))
    state.apply(PartialEvent(50.0, 1050.0, 99, "still talking", " here", 49.0, 49.3))
    state.apply(StatsEvent(50.0, 1050.0, 0.95, 35.0, 1.6, 3200, 2, 50.0))
    lines = screen(state, width, height)
    assert len(lines) == height and all(len(line) <= width for line in lines)
    text = " ".join(" ".join(lines).split())
    assert "streamer" in lines[0]
    assert "still talking here" in text  # the current line is never pushed off
    assert "several words in it › still" in text  # the newest caption just above the current line ...
    assert "caption number 0 " not in text  # ... the oldest scrolled off the top
    assert "falling behind" in text  # warnings shown (compacted to one line when tight)
    assert "RTF 1.00" in text  # over the recent audio: (0.95 * 50 - 0.2 * 3) / 47


def test_tentative_tail_is_replaced_then_finalised():
    state = LiveState(MODEL, MIC)
    talk(state)
    state.apply(PartialEvent(3.2, 1003.25, 1, "the weather", " is ni", 2.84, 3.16))
    assert body(screen(state, 80, 14)) == ["open the door", "› the weather is ni"]
    state.apply(PartialEvent(3.5, 1003.5, 1, "the weather is", " nice to", 3.08, 3.4))
    assert body(screen(state, 80, 14)) == ["open the door", "› the weather is nice to"]
    state.apply(FinalEvent(4.5, 1004.5, 1, "the weather is nice today", (), 2.4, 4.0))
    assert body(screen(state, 80, 14)) == ["open the door", "the weather is nice today"]


def test_tentative_text_is_dimmed_committed_is_not():
    state = LiveState(MODEL, MIC)
    state.apply(PartialEvent(1.0, 1001.0, 0, "committed words", " tentative tail", 0.5, 0.8))
    console = Console(file=io.StringIO(), width=60, height=8, color_system="standard", force_terminal=True)
    console.print(render(state.snapshot()))
    out = console.file.getvalue()
    dim = out.index("\x1b[2;3m")  # dim italic
    assert out.index("committed words") < dim < out.index("tentative tail")
    assert "\x1b[2" not in out[out.index("committed words") - 8 : out.index("committed words")]


def test_states_paused_waiting_and_warnings():
    state = LiveState(MODEL, MIC)
    assert "waiting for audio" in " ".join(screen(state, 60, 10))
    talk(state)
    state.apply(VadEvent(3.0, 1003.0, False, 1))
    assert "○ listening" in " ".join(screen(state, 60, 10))
    state.set_paused(True)
    lines = screen(state, 60, 10)
    assert "‖ paused" in " ".join(lines) and "p resume" in lines[-1]
    state.set_paused(False)
    state.apply(StatsEvent(4.0, 1004.0, 0.2, 35.0, 0.02, 4800, 3, 4.0))
    text = " ".join(screen(state, 60, 14))
    assert "dropped 4800" in text and "audio dropped: 0.30 s" in text and "input overflows: 3" in text


def test_notices_show_for_a_while_then_go():
    from streamer.ui.state import NOTICE_SHOW_S

    state = LiveState(MODEL, MIC)
    talk(state)
    state.notice("command: browser matched 'open browser' (score 96)", 2000.0)
    lines = screen_at(state, 60, 14, now_s=2001.0)
    rule = next(i for i, line in enumerate(lines) if line.startswith("───"))
    assert lines[rule - 1] == "» command: browser matched 'open browser' (score 96)"
    assert "command:" not in " ".join(screen_at(state, 60, 14, now_s=2000.0 + NOTICE_SHOW_S + 0.1))
    assert state.all_notices() == ["command: browser matched 'open browser' (score 96)"]


# -- the state -------------------------------------------------------------------------------------------------
def test_rtf_is_measured_over_recent_audio_and_warns_when_behind():
    state = LiveState(MODEL, MIC)
    for i in range(1, 21):  # 10 s at RTF 0.1, then 10 s at RTF 1.0: the session average would still be 0.55
        processed = i * 1.0
        compute = min(i, 10) * 0.1 + max(0, i - 10) * 1.0
        state.apply(StatsEvent(processed, 1000 + processed, compute / processed, 30.0, 0.1, 0, 0, processed))
    snap = state.snapshot()
    assert snap.rtf == pytest.approx(1.0, abs=0.01)
    assert any("falling behind real time" in w for w in snap.warnings)


def test_growing_lag_warns():
    state = LiveState(MODEL, MIC)
    for i, lag in enumerate([0.0, 0.1, 0.2, 0.3]):
        state.apply(StatsEvent(i, 1000 + i, 0.1, 30.0, lag, 0, 0, float(i)))
    assert state.snapshot().warnings == ()
    state.apply(StatsEvent(5, 1005, 0.1, 30.0, 0.45, 0, 0, 5.0))
    assert state.snapshot().warnings == ("lag growing: 0.5 s",) or state.snapshot().warnings == ("lag growing: 0.4 s",)
    state.apply(StatsEvent(6, 1006, 0.1, 30.0, 1.5, 0, 0, 6.0))
    assert state.snapshot().warnings == ("1.5 s of audio waiting",)


def test_latency_is_the_age_of_newly_shown_audio():
    state = LiveState(MODEL, MIC)
    t0 = 5000.0  # audio time 0 arrived at t0
    state.apply(LevelEvent(0.02, t0 + 0.02, -30, -20))  # caught up: fixes the origin
    state.apply(PartialEvent(1.0, t0 + 1.05, 0, "a", " b", 0.68, 1.0))
    assert state.snapshot().latency_s is None  # the first partial of a segment: no previous edge
    state.apply(PartialEvent(1.24, t0 + 1.30, 0, "a b", " c", 0.92, 1.24))
    # newly shown audio 1.00..1.24 s (mid 1.12 s) shown at 1.30 s
    assert state.snapshot().latency_s == pytest.approx(0.18)


def test_clear_and_bounded_transcript():
    state = LiveState(MODEL, MIC)
    for i in range(MAX_FINALS + 5):
        state.apply(FinalEvent(i, 1000 + i, i, f"c{i}", (), i, i + 0.5))
    state.apply(PartialEvent(0, 2000, 9999, "open", "", 0, 0))
    texts, let_go = state.transcript()
    assert len(texts) == MAX_FINALS and let_go == 5 and texts[-1] == f"c{MAX_FINALS + 4}"
    state.clear()
    snap = state.snapshot()
    assert snap.captions == () and snap.committed == "" and snap.tentative == ""
    assert state.transcript()[0] == texts  # clearing the screen keeps the transcript
    state.apply(FinalEvent(1, 3000, 10_000, "after clear", (), 0, 1))
    assert [c.text for c in state.snapshot().captions] == ["after clear"]


class _Controls:
    """The part of a Session the screen drives (streamer.ui.app.Controls)."""

    def __init__(self):
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.paused = False

    def request_stop(self):
        self.stopping.set()

    def toggle_pause(self):
        self.paused = not self.paused
        return self.paused


def test_keys_pause_clear_quit():
    session = _Controls()
    ui = CaptionUI(MODEL, MIC, session)
    ui.handle(FinalEvent(1.0, 1001.0, 0, "hello", (), 0.0, 1.0))
    ui.press("p")
    assert session.paused and ui.state.snapshot().paused
    ui.press("P")
    assert not session.paused and not ui.state.snapshot().paused
    ui.press("c")
    assert ui.state.snapshot().captions == ()
    ui.press("x")
    assert not session.stopping.is_set()
    ui.press("q")
    assert session.stopping.is_set()


def test_key_reader_on_a_pty():
    import termios

    from streamer.ui.app import KeyReader

    master, slave = os.openpty()
    with os.fdopen(slave, "rb", buffering=0) as tty:
        keys, wake = KeyReader(tty), threading.Event()
        before = termios.tcgetattr(slave)
        with keys.cbreak():
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # no Enter needed
            os.write(master, b"p")
            assert keys.read(2.0, wake) == "p"
            os.write(master, b"\x1b[C")  # right arrow: not a 'c'
            assert keys.read(2.0, wake) == ""
            assert keys.read(0.05, wake) == ""
        assert termios.tcgetattr(slave) == before
    os.close(master)


def test_run_without_a_terminal_returns_when_the_stream_ends_and_prints_the_transcript(capsys):
    session = _Controls()
    out = io.StringIO()
    console = Console(file=out, width=60, height=10, color_system=None)
    ui = CaptionUI(MODEL, MIC, session, console=console)
    ui.handle(FinalEvent(1.0, 1001.0, 0, "first caption", (), 0.0, 1.0))
    ui.handle(FinalEvent(2.0, 1002.0, 1, "second caption", (), 1.0, 2.0))
    ui.notify("command: lights matched 'turn off the lights' (score 91)")
    threading.Timer(0.3, session.finished.set).start()
    t = time.monotonic()
    ui.run()  # stdin is not a terminal under pytest: no keys, no termios
    assert time.monotonic() - t < 5
    assert session.stopping.is_set()
    assert out.getvalue().splitlines()[-2:] == ["first caption", "second caption"]
    assert capsys.readouterr().err == "command: lights matched 'turn off the lights' (score 91)\n"
    ui.notify("command: late")  # after the screen closed: straight to stderr
    assert capsys.readouterr().err == "command: late\n"


# -- the real program in a real terminal ---------------------------------------------------------------------
class Tmux:
    def __init__(self, width: int, height: int) -> None:
        self.name = f"streamer-test-{uuid.uuid4().hex[:8]}"
        # -c ROOT: `python -m` puts the working folder first on sys.path, so it must be this checkout.
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        "-c", str(ROOT), "bash --norc --noprofile"], check=True)

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def capture(self) -> list[str]:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True,
                             check=True).stdout
        return out.rstrip("\n").split("\n")

    def cursor_visible(self) -> bool:
        out = subprocess.run(["tmux", "display-message", "-p", "-t", self.name, "#{cursor_flag}"],
                             capture_output=True, text=True, check=True).stdout
        return out.strip() == "1"

    def wait_for(self, predicate, timeout: float, what: str) -> list[str]:
        deadline = time.monotonic() + timeout
        lines = self.capture()
        while not predicate(lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n" + "\n".join(lines))
            time.sleep(0.05)
            lines = self.capture()
        return lines

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def squash(lines: list[str]) -> str:
    return "".join("".join(lines).split())


def caption_lines(lines: list[str]) -> list[str]:
    """Finished captions on the screen: between the header and the rule, not the current (›) line."""
    rule = next(i for i, line in enumerate(lines) if line.startswith("───"))
    return [line for line in lines[1:rule] if line.strip() and not line.startswith("› ")]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt install tmux)")
def test_tui_in_a_real_terminal(tmp_path, utterances_wav, tiny_model):
    jsonl = tmp_path / "events.jsonl"
    cmd = " ".join(shlex.quote(str(a)) for a in [
        "env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "streamer", "--file", utterances_wav,
        "--replay", "realtime", "--model", tiny_model, "--output", jsonl])
    term = Tmux(80, 24)
    try:
        term.send(f"clear; S0=$(stty -g); {cmd}; echo EXIT=$?; [ \"$S0\" = \"$(stty -g)\" ] && echo TTY=same", "Enter")
        # A partial on the current line, then that segment's final as a finished caption.
        term.wait_for(lambda lines: any(line.startswith("› ") for line in lines), 30, "a partial (› line)")
        assert term.capture()[0].startswith(" streamer")

        def finals():
            return [e for e in map(json.loads, jsonl.read_text().splitlines()) if e["type"] == "final" and e["text"]]

        deadline = time.monotonic() + 15
        while not finals() and time.monotonic() < deadline:
            time.sleep(0.05)
        first = finals()[0]["text"]
        lines = term.wait_for(lambda lines: squash([first]) in map(squash, caption_lines(lines)), 5,
                              "the first final as a finished caption")
        assert sum(line.startswith("› ") for line in lines) <= 1  # one current line at most
        # p pauses (shown), p again resumes.
        term.send("p")
        term.wait_for(lambda lines: any("‖ paused" in line for line in lines), 5, "paused")
        term.send("p")
        term.wait_for(lambda lines: any("p pause" in line for line in lines), 5, "resumed")
        # c clears the captions.
        term.send("c")
        term.wait_for(lambda lines: squash([first]) not in map(squash, caption_lines(lines)), 5, "cleared")
        # q quits: exit 0, the alternate screen is gone, the transcript is printed, the tty is as it was.
        term.send("q")
        lines = term.wait_for(lambda lines: any(line.startswith("EXIT=") for line in lines), 15, "exit")
        assert "EXIT=0" in lines
        # the stty comparison runs after the echo: wait for its line (absent = the terminal was changed)
        lines = term.wait_for(lambda lines: "TTY=same" in lines, 5, "the terminal settings restored")
        assert not any("RTF" in line or "q quit" in line for line in lines)
        exit_at = lines.index("EXIT=0")
        printed = [line for line in lines[:exit_at] if line and not line.startswith(("bash", "streamer:"))]
        assert printed and squash(printed[:1]) == squash([first])
        assert term.cursor_visible()
    finally:
        term.kill()


def test_footer_shows_the_thread_count_the_model_runs_with():
    state = LiveState(MODEL, "mic: test @ 16000 Hz")
    state.apply(StatsEvent(3.0, 1003.0, 0.2, 35.0, 0.02, 0, 0, 3.0))
    assert not any("threads" in line for line in screen(state, 100, 20))
    state.apply(StatsEvent(4.0, 1004.0, 0.2, 35.0, 0.02, 0, 0, 4.0, threads=1))
    assert any("threads 1" in line for line in screen(state, 100, 20))


def test_the_screen_is_lively_while_captions_move_and_calm_in_room_tone():
    """The redraw rate follows `LiveState.lively`: fast in speech and for a moment after a caption change,
    slow when only the level meter moves (room tone), so an idle screen costs little CPU."""
    state = LiveState("demo", "mic")
    now = time.monotonic()
    assert not state.lively(now, 1.0)
    for i in range(20):  # room tone: only levels
        state.apply(LevelEvent(0.02 * i, 0.02 * i, -60.0, -50.0))
    assert not state.lively(time.monotonic(), 1.0), "the meter alone does not make the screen lively"
    state.apply(VadEvent(0.5, 0.5, True, 0))
    assert state.lively(time.monotonic() + 60, 1.0), "speech keeps it lively however long it lasts"
    state.apply(VadEvent(0.9, 0.9, False, 0))
    t = time.monotonic()
    assert state.lively(t, 1.0) and not state.lively(t + 1.5, 1.0)
    lanes = LiveState("demo", "mic", ("you", "desktop"))
    lanes.apply_lane("desktop", VadEvent(0.5, 0.5, True, 0))
    assert lanes.lively(time.monotonic() + 60, 1.0), "speech in any lane"
