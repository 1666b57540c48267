"""`streamer ctl` against a live streamer on the real audio stack: a PulseAudio virtual microphone (paplay
speaks into it), the demo model, `python -m streamer ctl ...` as a key binding would run it.

- three clips played while paused / resumed / paused: only the resumed one is transcribed;
- push-to-talk: resume, speak, pause while still speaking: the final comes from the pause (not the VAD's
  hangover), measured release -> final (figures: benchmarks/control_latency.py, BENCHMARKS.md);
- a stale socket of a killed instance is replaced by the next start; a second instance with the same name
  refuses to start; garbage on the socket is one line and the instance keeps running; SIGUSR1 toggles."""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from conftest import espeak
from streamer.app.control import socket_path
from streamer.cli import main
from test_desktop_audio import desk  # noqa: F401  (the fixture: a default output beside the virtual mic)

from helpers import have_demo_model

ROOT = Path(__file__).resolve().parents[1]


pytestmark = [pytest.mark.audio, pytest.mark.slow,
              pytest.mark.skipif(not have_demo_model(), reason="needs the demo model (assets/demo_model)")]

#: Generous bounds for one process step (model load included) on a busy 2-core machine, not speed targets.
READY_TIMEOUT_S = 90
FINAL_TIMEOUT_S = 20
CLIPS = {"first": "the red house stands on the hill",
         "second": "please open the window now",
         "third": "the dog runs in the park"}


class Live:
    """`python -m streamer --model demo --no-tui ...` on the virtual microphone; stdout and stderr lines are
    read on threads and kept with the time they arrived."""

    def __init__(self, *args: str, name: str | None = None, env: dict | None = None) -> None:
        extra = ["--name", name] if name else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "--model", "demo", "--no-tui", *extra, *args],
            env=dict(env or os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.out: queue.Queue[tuple[float, str]] = queue.Queue()
        self.err: queue.Queue[tuple[float, str]] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, q, keep in ((self.proc.stdout, self.out, self.stdout), (self.proc.stderr, self.err, self.stderr)):
            threading.Thread(target=self._read, args=(stream, q, keep), daemon=True).start()

    @staticmethod
    def _read(stream, q, keep) -> None:
        for line in stream:
            keep.append(line.rstrip("\n"))
            q.put((time.monotonic(), line.rstrip("\n")))

    def wait_line(self, q: queue.Queue, prefix: str, timeout: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                at, line = q.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None and q.empty():
                    break
                continue
            if line.startswith(prefix):
                return at, line
        raise AssertionError(f"no {prefix!r} line within {timeout} s; stderr: {self.stderr}; stdout: {self.stdout}")

    def ready(self) -> str:
        return self.wait_line(self.err, "streamer: ready, ", READY_TIMEOUT_S)[1]

    def final(self, timeout: float = FINAL_TIMEOUT_S) -> tuple[float, str]:
        return self.wait_line(self.out, "", timeout)

    def finish(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"streamer did not exit; stderr: {self.stderr}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def ctl(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "streamer", "ctl", *args], env=dict(env or os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Each sentence spoken by espeak-ng with 0.3 s of silence before and 0.8 s after (one utterance each)."""
    folder = tmp_path_factory.mktemp("ctl-clips")
    out = {}
    for key, text in CLIPS.items():
        audio, rate = espeak(folder / f"{key}.raw.wav", text)
        sf.write(str(folder / f"{key}.wav"), np.concatenate([np.zeros(int(0.3 * rate), np.float32), audio,
                                                              np.zeros(int(0.8 * rate), np.float32)]), rate)
        out[key] = folder / f"{key}.wav"
    return out


def events(jsonl: Path) -> list[dict]:
    lines = jsonl.read_text(encoding="utf-8").splitlines() if jsonl.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def offline(wav: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["--file", str(wav), "--offline", "--model", "demo"]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_pause_resume_quit_around_three_clips(virtual_mic, clips, capsys, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    s = Live("--start-paused", "--output", str(jsonl), name="three")
    try:
        assert s.ready() == "streamer: ready, paused (streamer ctl pause|resume|toggle|status|quit --name three)"
        # a second instance with the same name refuses at once, before loading its model
        t0 = time.monotonic()
        dup = subprocess.run([sys.executable, "-m", "streamer", "--model", "demo", "--no-tui", "--name", "three"],
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
        assert dup.returncode == 2 and time.monotonic() - t0 < 30
        assert dup.stderr.strip().splitlines() == [
            f"streamer: error: another streamer is already running as --name three (control socket "
            f"{socket_path('three')}) (stop it with: streamer ctl quit --name three; or start this one with another "
            "--name)"]

        virtual_mic.play(clips["first"])  # paused: not heard
        assert ctl("resume", "--name", "three") == (0, "streamer three: listening\n", "")
        virtual_mic.play(clips["second"])
        _, heard = s.final()
        assert ctl("pause", "--name", "three")[0] == 0
        virtual_mic.play(clips["third"])  # paused again: not heard
        # garbage on the socket: one line, and the instance goes on
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(socket_path("three")))
            raw.sendall(b"GET / HTTP/1.0\n")
            assert json.loads(raw.makefile("rb").readline())["ok"] is False
        rc, out, err = ctl("status", "--json", "--name", "three")
        status = json.loads(out)["status"]
        assert rc == 0 and status["state"] == "paused" and status["utterances"] == 1
        assert "demo" in status["model"] and status["sources"] and status["dropped_samples"] == 0
        assert status["uptime_s"] > 0 and status["processed_s"] > 0
        assert ctl("quit", "--name", "three") == (0, "streamer three: stopping\n", "")
        assert s.finish() == 0
    finally:
        s.kill()
    assert s.stdout == [heard]  # only the resumed clip was transcribed
    finals = [e for e in map(json.loads, jsonl.read_text().splitlines()) if e["type"] == "final"]
    assert [f["text"] for f in finals] == [heard]
    texts = {key: offline(wav, capsys) for key, wav in clips.items()}
    cer = {key: jiwer.cer(text, heard) for key, text in texts.items()}
    with capsys.disabled():
        print(f"\nheard {heard!r}; offline decodes {texts}; CER {cer}")
    assert min(cer, key=cer.get) == "second" and cer["second"] <= 0.25
    bad = [line for line in s.stderr if "control socket: ignored a message that is not JSON" in line]
    assert len(bad) == 1 and "Traceback" not in "\n".join(s.stderr)
    assert not socket_path("three").exists()  # removed at the end


def test_push_to_talk_final_comes_from_the_release(virtual_mic, clips, capsys, tmp_path):
    """Resume, speak, pause while the speaker is still talking: the final comes at once (its audio time is
    the pause point, not the VAD's hangover after it), a model pass after the release. SIGUSR1 toggles too."""
    long_clip = tmp_path / "long.wav"
    parts = [sf.read(str(clips[k]), dtype="float32")[0] for k in ("first", "second", "third")]
    rate = sf.info(str(clips["first"])).samplerate
    sf.write(str(long_clip), np.concatenate(parts), rate)
    jsonl = tmp_path / "ptt.jsonl"
    s = Live("--start-paused", "--output", str(jsonl), "--overwrite", name="ptt")
    waits = []
    try:
        s.ready()
        for _ in range(3):
            assert ctl("resume", "--name", "ptt")[0] == 0  # key press
            seen = len(events(jsonl))
            player = virtual_mic.play(long_clip, wait=False)
            wait_until(lambda seen=seen: any(e["type"] == "partial" and len(e["committed_text"]) >= 5
                                             for e in events(jsonl)[seen:]), 20, "a partial: the speaker is talking")
            released = time.monotonic()
            assert ctl("pause", "--name", "ptt")[0] == 0  # key release, mid-sentence
            arrived, text = s.final()
            waits.append(arrived - released)
            player.wait(30)
        os.kill(s.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while json.loads(ctl("status", "--json", "--name", "ptt")[1])["status"]["state"] != "listening":
            assert time.monotonic() < deadline, "SIGUSR1 did not resume"
        os.kill(s.proc.pid, signal.SIGUSR1)
        while json.loads(ctl("status", "--json", "--name", "ptt")[1])["status"]["state"] != "paused":
            assert time.monotonic() < deadline, "SIGUSR1 did not pause"
        assert ctl("quit", "--name", "ptt")[0] == 0
        assert s.finish() == 0
    finally:
        s.kill()
    finals = [e for e in events(jsonl) if e["type"] == "final"]
    with capsys.disabled():
        print(f"\npush-to-talk release -> final (incl. the ctl process): {[round(w, 3) for w in waits]} s; "
              f"finals {[(f['text'], f['end_s'], f['audio_time_s']) for f in finals]}")
    assert len(finals) == 3 and all(f["text"] for f in finals)
    # Ended by the pause: decided at the audio where the pause cut the speech (0 s after its end; a pause in a
    # gap between words longer than the 150 ms tail adds the rest of that gap). Ended by the VAD, it would be
    # decided hangover - tail (0.3 s) of silence after its end.
    assert all(f["audio_time_s"] - f["end_s"] < 0.2 for f in finals), finals
    assert max(waits) < 5.0  # loose: a ctl process start plus one model pass (figures in BENCHMARKS.md)


def test_a_killed_instance_leaves_a_stale_socket_that_the_next_start_replaces(virtual_mic):
    s = Live("--start-paused", name="stale")
    try:
        s.ready()
    finally:
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(10)
    path = socket_path("stale")
    assert path.exists()  # left behind
    rc, out, err = ctl("status", "--name", "stale")
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [
        f"streamer: error: no streamer is running as stale (a stale control socket is left at {path} by an "
        "instance that was killed; the next start replaces it) (start one, e.g. streamer --start-paused --name stale)"]
    again = Live("--start-paused", name="stale")
    try:
        again.ready()
        rc, out, _ = ctl("status", "--name", "stale")
        assert rc == 0 and "state:           paused" in out
        assert ctl("quit", "--name", "stale")[0] == 0
        assert again.finish() == 0
    finally:
        again.kill()


def test_ctl_drives_mic_and_desktop_together(desk, tmp_path):
    """--mic --desktop: one socket pauses and resumes both sessions; status names both sources."""
    from test_desktop_audio import CLIPS

    jsonl = tmp_path / "both.jsonl"
    s = Live("--mic", "--desktop", "--start-paused", "--output", str(jsonl), name="both", env=desk.env)
    try:
        assert s.ready().startswith("streamer: ready, paused")
        desk.play_as_media(CLIPS / "demo2_en-gb-f2.wav")  # paused: not heard
        assert ctl("resume", "--name", "both", env=desk.env)[0] == 0
        desk.play_as_media(CLIPS / "demo1_en-us.wav")
        s.final()
        rc, out, _ = ctl("status", "--json", "--name", "both", env=desk.env)
        status = json.loads(out)["status"]
        assert rc == 0 and status["state"] == "listening" and len(status["sources"]) == 2
        assert status["utterances"] == 1
        assert ctl("quit", "--name", "both", env=desk.env)[0] == 0
        assert s.finish() == 0
    finally:
        s.kill()
    finals = [e for e in events(jsonl) if e["type"] == "final" and e["text"]]
    assert [f["source"] for f in finals] == ["desktop"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt install tmux)")
def test_the_caption_screen_shows_a_pause_from_outside(tmp_path, utterances_wav, tiny_model):
    """The TUI in a real terminal (tmux): --start-paused shows paused; ctl resume / pause switch what the
    screen shows; ctl quit ends it with exit 0."""
    from test_ui import Tmux

    cmd = " ".join(shlex.quote(str(a)) for a in [
        "env", f"PYTHONPATH={ROOT}", f"XDG_RUNTIME_DIR={os.environ['XDG_RUNTIME_DIR']}", sys.executable, "-m",
        "streamer", "--file", utterances_wav, "--replay", "realtime", "--model", tiny_model, "--start-paused",
        "--name", "tui"])
    term = Tmux(80, 24)
    try:
        term.send(f"clear; {cmd}; echo EXIT=$?", "Enter")
        term.wait_for(lambda lines: any("‖ paused" in line for line in lines), 60, "paused at start")
        assert ctl("resume", "--name", "tui")[0] == 0
        term.wait_for(lambda lines: any("p pause" in line for line in lines), 5, "listening")
        assert ctl("pause", "--name", "tui")[0] == 0
        term.wait_for(lambda lines: any("‖ paused" in line for line in lines), 5, "paused from outside")
        assert ctl("quit", "--name", "tui")[0] == 0
        lines = term.wait_for(lambda lines: any(line.startswith("EXIT=") for line in lines), 15, "exit")
        assert "EXIT=0" in lines
    finally:
        term.kill()
