"""Idle CPU of the real application: `streamer` listening to a PulseAudio virtual microphone (streamer.bench.pulse)
that plays room tone, measured from outside as a user's `top` would see it, thread by thread.

    streamer bench --idle-live-s 30                 # --no-tui and the caption screen (in a pseudo-terminal)
    streamer bench --idle-live-s 30 --model base

The benchmark's `--idle-s` runs the pipeline alone on room tone (no PortAudio, no sound server, no screen);
this is what the whole process takes: the PortAudio callback thread, libpulse's thread, the capture thread,
the worker and the screen. CPU time is read from /proc/PID/task/TID/stat (utime + stime) at the start and the
end of the measured span, which begins IDLE_LIVE_SETTLE_S after the application says it is listening."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bench.cli import say
from streamer.bench.corpus import silence
from streamer.bench.pulse import PulseMic
from streamer.bench.soak import streamer_env
from streamer.bench.suite import host, loadavg
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.errors import ConfigError, StreamerError

#: Seconds after "listening on" before the measured span starts (the first blocks, the screen's first frames).
IDLE_LIVE_SETTLE_S = 3.0
#: How long the application may take to load and say it is listening.
IDLE_LIVE_START_TIMEOUT_S = 120.0
#: The pseudo-terminal the caption screen draws on (columns, rows).
IDLE_LIVE_TERMINAL = (100, 30)


@dataclass(frozen=True)
class ThreadCounters:
    """One thread's counters so far: its name, the CPU it has used (clock ticks: utime + stime) and how often
    it has gone to sleep (voluntary context switches: one per wait, so the count of wake-ups)."""

    name: str
    cpu_ticks: int
    wakeups: int


def thread_counters(pid: int) -> dict[int, ThreadCounters]:
    """Each thread of `pid`, by thread id (a thread that ends while it is read is left out)."""
    out: dict[int, ThreadCounters] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": utime, stime are fields 14, 15
        switches = next(line for line in status.splitlines() if line.startswith("voluntary_ctxt_switches:"))
        out[int(tid)] = ThreadCounters(stat[stat.index("(") + 1:stat.rindex(")")],
                                       int(fields[11]) + int(fields[12]), int(switches.split(":")[1]))
    return out


def per_second(before: dict[int, ThreadCounters], after: dict[int, ThreadCounters], wall_s: float,
               main_tid: int, counter: str, scale: float = 1.0) -> dict[str, float]:
    """The growth of one counter ("cpu_ticks" or "wakeups") per second (times `scale`), threads of one name
    summed (the main thread is "main"), largest first."""
    grew: dict[str, float] = {}
    for tid, now in after.items():
        key = "main" if tid == main_tid else now.name
        then = before.get(tid)
        grew[key] = grew.get(key, 0.0) + getattr(now, counter) - (getattr(then, counter) if then else 0)
    return {k: round(scale * v / wall_s, 2) for k, v in sorted(grew.items(), key=lambda kv: -kv[1])}


def measure(model: str, seconds: float, tui: bool, folder: Path) -> dict:
    """One run of the application on the virtual microphone playing room tone; its CPU over `seconds`."""
    import soundfile as sf

    mic = PulseMic(folder / "pulse")
    player: subprocess.Popen | None = None
    proc: subprocess.Popen | None = None
    master: int | None = None
    lines: list[str] = []
    try:
        tone = folder / "room_tone.wav"
        sf.write(tone, (silence(seconds + IDLE_LIVE_START_TIMEOUT_S + 30) * 32767).astype(np.int16),
                 MODEL_SAMPLE_RATE)
        cmd = [sys.executable, "-m", "streamer", "--model", model, "--output",
               str(folder / "out.jsonl")]
        env = streamer_env(folder, mic.env)
        if tui:
            import fcntl
            import struct
            import termios

            master, slave = pty.openpty()
            cols, rows = IDLE_LIVE_TERMINAL
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            env["TERM"] = "xterm-256color"
            stdin: Any = slave
            stdout: Any = slave
        else:
            cmd.append("--no-tui")
            stdin, stdout = subprocess.DEVNULL, subprocess.DEVNULL
        player = mic.play(tone, wait=False)
        try:
            proc = subprocess.Popen(cmd, cwd=folder, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
        finally:
            if master is not None:
                os.close(slave)
        listening = threading.Event()

        def read_stderr() -> None:
            assert proc is not None and proc.stderr is not None
            for line in proc.stderr:
                lines.append(line.rstrip("\n"))
                if "listening on " in line:
                    listening.set()

        def drain_screen() -> None:  # the terminal's side: read what the screen draws, as a terminal would
            assert master is not None
            try:
                while os.read(master, 65536):
                    pass
            except OSError:
                pass

        threading.Thread(target=read_stderr, daemon=True).start()
        if master is not None:
            threading.Thread(target=drain_screen, daemon=True).start()
        deadline = time.monotonic() + IDLE_LIVE_START_TIMEOUT_S
        # the caption screen says it is listening on the screen, not on stderr: wait for the capture thread
        while not listening.is_set() and not (tui and _has_thread(proc.pid, "capture")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StreamerError("idle live: streamer did not start listening: " + _said(lines),
                                    "run the same streamer command by hand to see why")
            time.sleep(0.1)
        time.sleep(IDLE_LIVE_SETTLE_S)  # the measured span starts after the first blocks and frames
        load_start = loadavg()
        t0, before = time.monotonic(), thread_counters(proc.pid)
        time.sleep(seconds)  # the measurement itself: the application runs on its own this long
        t1, after = time.monotonic(), thread_counters(proc.pid)
        if proc.poll() is not None:
            raise StreamerError("idle live: streamer exited during the measurement: " + _said(lines),
                                "run the same streamer command by hand to see why")
        threads = per_second(before, after, t1 - t0, proc.pid, "cpu_ticks", 100 / os.sysconf("SC_CLK_TCK"))
        wakeups = per_second(before, after, t1 - t0, proc.pid, "wakeups")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if player is not None:
            player.kill()
        mic.stop()
        if master is not None:
            os.close(master)
    return {"model": model, "screen": "captions" if tui else "--no-tui", "seconds": round(t1 - t0, 2),
            "cpu_percent": round(sum(threads.values()), 2), "threads": threads,
            "wakeups_per_s": wakeups, "loadavg_start": load_start,
            "loadavg_end": loadavg(), "exit": proc.returncode}


def _said(lines: list[str]) -> str:
    """The application's last words on stderr, on one line."""
    return " | ".join(line.strip() for line in lines[-3:] if line.strip()) or "(nothing on stderr)"


def _has_thread(pid: int, name: str) -> bool:
    try:
        return any(t.name == name for t in thread_counters(pid).values())
    except OSError:
        return False


def idle_live_main(args, argv: list[str]) -> int:
    from streamer.bench.models import model_folder

    if not args.idle_live_s > 0:
        raise ConfigError(f"--idle-live-s must be a positive number of seconds, not {args.idle_live_s:g}",
                          "e.g. --idle-live-s 30")
    model = model_folder(args.model)  # base / large: the benchmark's random-init folders (built once)
    runs = []
    with tempfile.TemporaryDirectory(prefix="streamer-idle-live-") as tmp:
        for tui in (False, True):
            folder = Path(tmp) / ("tui" if tui else "plain")
            folder.mkdir()
            say(f"idle live: {args.model}, {'caption screen' if tui else '--no-tui'}, {args.idle_live_s:g} s of room tone ...")
            runs.append(measure(model, args.idle_live_s, tui, folder))
    for r in runs:
        top = ", ".join(f"{k} {v} ({r['wakeups_per_s'].get(k, 0):g}/s)" for k, v in list(r["threads"].items())[:6])
        print(f"{r['screen']:>9}: {r['cpu_percent']:.2f} % of a core over {r['seconds']:g} s "
              f"(load {r['loadavg_start'][0]}); % by thread (wake-ups): {top}")
    doc = {"argv": argv, "host": host(), "idle_live": runs}
    out = Path(args.json or "streamer-idle-live.json")
    out.write_text(json.dumps(doc, indent=1))
    say(f"wrote {out}")
    return 0
