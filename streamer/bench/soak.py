"""`streamer bench --soak MINUTES`: a long mixed recording through the real `streamer` process, with faults
injected while it runs, measured only from what the CLI shows the user (exit code, stderr lines, the jsonl
events and the output files), so it measures whatever the application does about each fault.

The recording: the bundled demo clips (assets/demo_clips, espeak voices the demo model reads) in a seeded
random order, with room tone of 0.3-3 s between them and, now and then, a few seconds of non-speech (music,
dishes) from assets/audio; a handful of non-finite samples (NaN, +Inf, -Inf) at known places. The clip
placements are the truth: each speech clip should give its final.

The run: `python -m streamer --model demo --no-tui --output ok.jsonl --output ok.txt --output full.srt`, where
full.srt is a symbolic link to /dev/full (one output on a full disk) and stdout is a pipe that the harness
closes after the first few lines (closed stdout). While it runs:

- accelerated (default): `--file mix.wav --replay fast`; a stall (SIGSTOP, then SIGCONT) a quarter of the
  way in and overload (one busy process per core) from 45 % to 65 % of the audio;
- live (`--soak-live`): the mix is played in real time with paplay into a private PulseAudio null sink whose
  monitor is the default source (a virtual microphone) and streamer captures it; a stall of STALL_LIVE_S at
  35 %, overload from 55 % to 70 %, and device loss (the null sink's module unloaded) in the silent tail.

A fault-free reference run of the same file (fast replay, no faults) gives the text each clip should get.
Figures: finals expected vs received, finals equal to the reference, dropped and zeroed samples, whatever
gap / stall counters the stats events carry, RSS of the streamer process at start / peak / end, final latency
in the first vs last ten minutes (drift), the exit code and every stderr line. A fault the CLI does not
survive is reported as such, never hidden.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bench.cli import say
from streamer.bench.corpus import repo_root
from streamer.bench.pulse import PulseMic
from streamer.bench.suite import BUSY_LOOP, host, loadavg
from streamer.core.config import MODEL_SAMPLE_RATE

#: Room tone between items (-80 dBFS noise, as in corpus.py).
ROOM_TONE_RMS = 1e-4
GAP_RANGE_S = (0.3, 3.0)
#: One item in this many is a piece of non-speech instead of a clip.
NONSPEECH_EVERY = 8
NONSPEECH_S = (2.0, 5.0)
#: Room tone at the start, and at the end (where live mode injects device loss, after the last clip).
LEAD_S = 1.0
TAIL_FAST_S = 3.0
TAIL_LIVE_S = 12.0
#: Lines of stdout read before the harness closes the pipe.
STDOUT_LINES = 3
STALL_FAST_S = 5.0
#: Live stall: longer than the 12 s after which streamer used to call a stalled capture a lost device.
STALL_LIVE_S = 14.0
STALL_AT = {"fast": 0.25, "live": 0.35}
OVERLOAD = {"fast": (0.45, 0.65), "live": (0.55, 0.70)}
#: Overload lasts at least this long (a short accelerated run gets through 20 % of its audio in a second).
OVERLOAD_MIN_S = 8.0
#: After device loss, how long streamer may take to notice before the harness stops it (SIGINT).
DEVICE_LOSS_GRACE_S = 20.0
#: Latency drift windows: the first and last ten minutes of audio (a third of it in shorter runs).
DRIFT_WINDOW_S = 600.0
POLL_S = 0.1
#: Stderr lines that are not faults.
INFO_PREFIXES = ("streamer: listening on ",)


# -- the recording ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    name: str
    start: int  # sample in the mix
    end: int
    speech: bool
    speech_end: int  # last loud sample + 1 (for live latency: when the utterance's audio has all arrived)
    speech_start: int = 0  # first loud sample


@dataclass
class Mix:
    audio: np.ndarray
    items: list[Item]
    nonfinite_at: list[int]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / MODEL_SAMPLE_RATE

    @property
    def speech(self) -> list[Item]:
        return [i for i in self.items if i.speech]

    def item_at(self, t_s: float) -> Item | None:
        """The item whose span, extended half-way into the gaps beside it, holds mix time t_s."""
        import bisect

        if not self.items:
            return None
        s = t_s * MODEL_SAMPLE_RATE
        k = bisect.bisect_right([it.start for it in self.items], s)
        near = self.items[max(0, k - 1):k + 1]
        return min(near, key=lambda it: 0.0 if it.start <= s < it.end else min(abs(s - it.start), abs(s - it.end)))


def _read16k(path: Path) -> np.ndarray:
    import soundfile as sf

    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate != MODEL_SAMPLE_RATE:
        import soxr

        x = soxr.resample(x, rate, MODEL_SAMPLE_RATE).astype(np.float32)
    return np.ascontiguousarray(x, np.float32)


def demo_clips() -> list[tuple[str, np.ndarray]]:
    folder = repo_root() / "assets" / "demo_clips"
    clips = [(p.stem, _read16k(p)) for p in sorted(folder.glob("demo[0-9]*_*.wav"))]
    if not clips:
        from streamer.errors import ConfigError

        raise ConfigError(f"no demo clips in {folder}", "restore assets/demo_clips from the repository")
    return clips


def nonspeech_audio() -> list[tuple[str, np.ndarray]]:
    folder = repo_root() / "assets" / "audio"
    return [(p.stem, _read16k(p)) for p in sorted(folder.glob("nonspeech_*.wav"))]


def build_mix(minutes: float, seed: int = 0, tail_s: float = TAIL_FAST_S, nonfinite: bool = True) -> Mix:
    """MINUTES of clips, room tone and non-speech (seeded), with non-finite samples at known places: one in
    the loudest part of a speech clip every ten minutes or so (NaN, +Inf, -Inf in turn), and a run of 50 NaN
    in the room tone half-way through."""
    rng = np.random.default_rng(seed)
    clips, noise = demo_clips(), nonspeech_audio()
    total = int(minutes * 60 * MODEL_SAMPLE_RATE)
    tail = int(tail_s * MODEL_SAMPLE_RATE)

    def tone(n: int) -> np.ndarray:
        return (rng.standard_normal(n) * ROOM_TONE_RMS).astype(np.float32)

    parts = [tone(int(LEAD_S * MODEL_SAMPLE_RATE))]
    pos = len(parts[0])
    items: list[Item] = []
    k = 0
    while True:
        if noise and k % NONSPEECH_EVERY == NONSPEECH_EVERY - 1:
            name, x = noise[int(rng.integers(len(noise)))]
            n = int(rng.uniform(*NONSPEECH_S) * MODEL_SAMPLE_RATE)
            off = int(rng.integers(0, max(1, len(x) - n)))
            audio, speech = x[off:off + n] * 0.5, False
        else:
            name, audio = clips[int(rng.integers(len(clips)))]
            speech = True
        gap = int(rng.uniform(*GAP_RANGE_S) * MODEL_SAMPLE_RATE)
        if pos + len(audio) + gap + tail > total and items:
            break
        loud = np.nonzero(np.abs(audio) > 0.02 * (np.abs(audio).max() + 1e-9))[0]
        speech_end = pos + (int(loud[-1]) + 1 if len(loud) else len(audio))
        items.append(Item(name, pos, pos + len(audio), speech, speech_end, pos + (int(loud[0]) if len(loud) else 0)))
        parts += [audio.astype(np.float32), tone(gap)]
        pos += len(audio) + gap
        k += 1
    parts.append(tone(max(tail, total - pos)))
    mix = np.concatenate(parts)
    # non-finite samples
    at_nonfinite: list[int] = []
    if not nonfinite:
        return Mix(mix, items, at_nonfinite)
    speech_items = [i for i in items if i.speech]
    n_clips = max(1, int(minutes / 10) + 1)
    for j, it in enumerate(speech_items[:: max(1, len(speech_items) // n_clips)][:n_clips]):
        at = it.start + int(np.argmax(np.abs(mix[it.start:it.end])))
        mix[at] = (np.nan, np.inf, -np.inf)[j % 3]
        at_nonfinite.append(at)
    mid = len(mix) // 2
    gap_item = next((a for a, b in zip(items, items[1:]) if a.end >= mid and b.start - a.end > 0.2 * MODEL_SAMPLE_RATE),
                    None)
    if gap_item is not None:
        at = gap_item.end + int(0.05 * MODEL_SAMPLE_RATE)
        mix[at:at + 50] = np.nan
        at_nonfinite += list(range(at, at + 50))
    return Mix(mix, items, at_nonfinite)


def write_wav(mix: Mix, path: Path) -> Path:
    import soundfile as sf

    sf.write(path, mix.audio, MODEL_SAMPLE_RATE, subtype="FLOAT")  # float: NaN and Inf survive the file
    return path


# -- watching the process -----------------------------------------------------------------------------------------
class JsonlTail:
    """The events of a growing jsonl file, read incrementally (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path, self._buf, self._pos = path, b"", 0
        self.events: list[dict] = []
        self.front_s = 0.0  # how far into the audio the processing has got (from the events' audio positions)
        self.finals = 0

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except OSError:
            return []
        self._pos += len(data)
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        new = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            new.append(e)
            self.front_s = max(self.front_s, _front(e))
            self.finals += e.get("type") == "final"
        self.events += new
        return new


def _front(e: dict) -> float:
    t = e.get("type")
    if t == "stats":
        return float(e.get("processed_s") or 0.0)
    if t == "partial":
        return float(e.get("tentative_until_s") or e.get("committed_until_s") or 0.0)
    if t == "final":
        return float(e.get("end_s") or 0.0)
    return 0.0


class RssPoller(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            proc = psutil.Process(self.pid)
            while not self._halt.is_set():
                rss = proc.memory_info().rss
                if rss and proc.status() != psutil.STATUS_ZOMBIE:  # an exited process reads 0
                    self.samples.append((time.time(), rss))
                self._halt.wait(self.every_s)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Overload:
    """One busy process per CPU this process may use."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


# -- one run of the CLI -------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    command: list[str]
    returncode: int | None = None
    events: list[dict] = field(default_factory=list)
    stderr: list[tuple[float, str]] = field(default_factory=list)
    stdout_read: list[str] = field(default_factory=list)
    txt_lines: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    play_started: float | None = None
    exited: float | None = None
    notes: list[str] = field(default_factory=list)


def streamer_env(folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(extra or os.environ)
    env["PYTHONPATH"] = str(repo_root()) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(folder / "xdg-config")  # never the user's own settings file
    env.pop("WAYLAND_DISPLAY", None)
    return env


def reference_run(model: str, wav: Path, folder: Path, timeout_s: float) -> RunRecord:
    """The same recording, fast replay, no faults: the text each clip should get."""
    out = folder / "ref.jsonl"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "streamer", "--model", model, "--no-tui", "--file", str(wav), "--replay", "fast",
           "--output", str(out)]
    rec = RunRecord(cmd, started=time.time())
    p = subprocess.run(cmd, cwd=folder, env=streamer_env(folder), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout_s)
    rec.ended, rec.returncode = time.time(), p.returncode
    rec.stderr = [(rec.ended, line) for line in p.stderr.splitlines()]
    tail = JsonlTail(out)
    tail.poll()
    rec.events = tail.events
    return rec


def soak_run(model: str, mix: Mix, wav: Path, folder: Path, live: bool, timeout_s: float,
             progress: bool = True) -> RunRecord:
    ok_jsonl, ok_txt, full = folder / "ok.jsonl", folder / "ok.txt", folder / "full.srt"
    for p in (ok_jsonl, ok_txt, full):
        p.unlink(missing_ok=True)
    full.symlink_to("/dev/full")
    mode = "live" if live else "fast"
    mic = PulseMic(folder / "pulse") if live else None
    cmd = [sys.executable, "-m", "streamer", "--model", model, "--no-tui"]
    if not live:
        cmd += ["--file", str(wav), "--replay", "fast"]
    cmd += ["--output", str(ok_jsonl), "--output", str(ok_txt), "--output", str(full)]
    rec = RunRecord(cmd, started=time.time())
    env = streamer_env(folder, mic.env if mic else None)
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    listening = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            rec.stderr.append((time.time(), line.rstrip("\n")))
            if line.startswith("streamer: listening on "):
                listening.set()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for _ in range(STDOUT_LINES):
            line = proc.stdout.readline()
            if not line:
                break
            rec.stdout_read.append(line.rstrip("\n"))
        proc.stdout.close()  # like `| head -3`
        rec.faults.append({"fault": "stdout closed", "wall": time.time(), "after_lines": len(rec.stdout_read)})

    readers = [threading.Thread(target=read_stderr, daemon=True), threading.Thread(target=read_stdout, daemon=True)]
    for t in readers:
        t.start()
    rss = RssPoller(proc.pid)
    rss.start()
    tail = JsonlTail(ok_jsonl)
    busy = Overload()
    player: subprocess.Popen | None = None
    duration = mix.duration_s
    stall_at, (ov_from, ov_to) = STALL_AT[mode] * duration, OVERLOAD[mode]
    stall_s = STALL_LIVE_S if live else STALL_FAST_S
    state: dict[str, Any] = {"stalled": False, "overload": "before", "lost": None}
    deadline = time.monotonic() + timeout_s
    last_say = 0.0
    try:
        if live:
            while not listening.is_set():
                if proc.poll() is not None or time.monotonic() > deadline:
                    rec.notes.append("streamer never said it was listening")
                    break
                time.sleep(POLL_S)
            if listening.is_set():
                assert mic is not None
                player = mic.play(wav, wait=False)
                rec.play_started = time.time()
        while proc.poll() is None:
            if time.monotonic() > deadline:
                rec.notes.append(f"timed out after {timeout_s:.0f} s: killed")
                proc.kill()
                break
            tail.poll()
            pos = (time.time() - rec.play_started) if live and rec.play_started else tail.front_s
            if not state["stalled"] and pos >= stall_at and (not live or rec.play_started):
                state["stalled"] = True
                t0 = time.time()
                proc.send_signal(signal.SIGSTOP)
                time.sleep(stall_s)  # the fault itself: the process is stopped this long
                proc.send_signal(signal.SIGCONT)
                rec.faults.append({"fault": "stall (SIGSTOP)", "wall": t0, "seconds": round(time.time() - t0, 2),
                                   "at_audio_s": round(pos, 1)})
                continue
            if state["overload"] == "before" and pos >= ov_from * duration:
                busy.start()
                state["overload"] = "on"
                rec.faults.append({"fault": "overload", "wall": time.time(), "processes": len(busy.procs),
                                   "at_audio_s": round(pos, 1)})
            elif state["overload"] == "on" and pos >= ov_to * duration and time.time() - next(
                    f["wall"] for f in rec.faults if f["fault"] == "overload") >= OVERLOAD_MIN_S:
                busy.stop()
                state["overload"] = "done"
                ov = next(f for f in rec.faults if f["fault"] == "overload")
                ov["seconds"] = round(time.time() - ov["wall"], 2)
            if live and mic is not None and state["lost"] is None and pos >= duration - TAIL_LIVE_S + 4:
                state["lost"] = time.time()
                mic.unload_sink()
                rec.faults.append({"fault": "device lost (null sink unloaded)", "wall": state["lost"],
                                   "at_audio_s": round(pos, 1)})
            if state["lost"] is not None and time.time() - state["lost"] > DEVICE_LOSS_GRACE_S:
                rec.notes.append(f"still running {DEVICE_LOSS_GRACE_S:.0f} s after the device was lost: "
                                 "stopped with SIGINT")
                proc.send_signal(signal.SIGINT)
                state["lost"] = float("inf")
            if progress and time.monotonic() - last_say > 30:
                last_say = time.monotonic()
                say(f"soak: {pos / 60:.1f} of {duration / 60:.1f} min, {tail.finals} finals")
            time.sleep(POLL_S)
        rec.returncode = proc.wait()
        rec.exited = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        busy.stop()
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        if mic is not None:
            mic.stop()
        rss.stop()
        for t in readers:
            t.join(5)
    rec.ended = time.time()
    tail.poll()
    rec.events, rec.rss = tail.events, rss.samples
    rec.txt_lines = ok_txt.read_text(encoding="utf-8").splitlines() if ok_txt.exists() else []
    return rec


# -- analysis -----------------------------------------------------------------------------------------------------
def finals(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("type") == "final"]


def _mid(e: dict) -> float:
    return (float(e["start_s"]) + float(e["end_s"])) / 2


def _similarity(a: str, b: str) -> float:
    from difflib import SequenceMatcher

    return SequenceMatcher(None, a, b).ratio() if a or b else 1.0


def _score(mix: Mix, fs: list[dict], offset: float, ref_text: dict[int, str]) -> float:
    """How well finals line up with the speech items when stream time = mix time + offset: per final, a
    Gaussian of the distance between its centre and the centre of the speech it falls on, weighted by how
    like the reference run's text for that item its text is (the same clip recurs: text alone is ambiguous,
    position alone is flat over a clip's padding)."""
    s = 0.0
    index = {id(it): k for k, it in enumerate(mix.items)}
    for e in fs:
        c = _mid(e) - offset
        it = mix.item_at(c)
        if it is not None and it.speech:
            centre = (it.speech_start + it.speech_end) / 2 / MODEL_SAMPLE_RATE
            s += float(np.exp(-((c - centre) ** 2) / (2 * 0.3**2))) * \
                _similarity(str(e.get("text", "")), ref_text.get(index[id(it)], ""))
    return s


def live_offsets(mix: Mix, rec: RunRecord, ref_text: dict[int, str]) -> list[tuple[float, float]]:
    """Stream time minus mix time, piecewise: [(from stream time, offset)]. Estimated from the stats events
    (stream time at the wall time playback started), then fitted to the finals' positions and texts,
    separately before and after each stall (audio lost in a stall puts the stream behind the mix by up to
    the stall's length)."""
    fs = [e for e in finals(rec.events) if e.get("text")]
    stats = [e for e in rec.events if e.get("type") == "stats"]
    guess = 0.0
    if rec.play_started and stats:
        s = min(stats, key=lambda e: abs(float(e["wall_time_s"]) - rec.play_started))  # type: ignore[operator]
        guess = float(s["audio_time_s"]) + float(s.get("lag_s") or 0.0) + rec.play_started - float(s["wall_time_s"])
    stalls = [f for f in rec.faults if f["fault"].startswith("stall")]
    cuts = sorted(f["wall"] + f.get("seconds", 0) for f in stalls)
    stall_s = max((f.get("seconds", 0) for f in stalls), default=0.0)
    pieces: list[tuple[float, float]] = []
    bounds = [-np.inf, *cuts, np.inf]
    for a, b in zip(bounds, bounds[1:]):
        g = [e for e in fs if a <= float(e["wall_time_s"]) < b]
        if not g:
            continue
        lo, hi = (guess - 3.0, guess + 3.0) if not pieces else (guess - stall_s - 3.0, guess + 3.0)
        grid = np.arange(lo, hi, 0.01)
        scores = [_score(mix, g[:40], float(o), ref_text) for o in grid]
        best = float(grid[int(np.argmax(scores))])
        pieces.append((float(g[0]["start_s"]), best))
        guess = best
    return pieces or [(0.0, guess)]


def offset_at(pieces: list[tuple[float, float]], stream_s: float) -> float:
    off = pieces[0][1]
    for start, o in pieces:
        if stream_s >= start:
            off = o
    return off


def by_item(mix: Mix, fs: list[dict], pieces: list[tuple[float, float]]) -> dict[int, list[dict]]:
    index = {id(it): k for k, it in enumerate(mix.items)}
    out: dict[int, list[dict]] = {}
    for e in fs:
        it = mix.item_at(_mid(e) - offset_at(pieces, float(e["start_s"])))
        if it is not None:
            out.setdefault(index[id(it)], []).append(e)
    return out


def _text(es: list[dict]) -> str:
    return " ".join(" ".join(e.get("text", "") for e in es).split())


def _cer(pairs: list[tuple[str, str]]) -> float | None:
    """Character error rate of the received texts against the reference run's, over all pairs."""
    from difflib import SequenceMatcher

    total = sum(len(ref) for ref, _ in pairs)
    if not total:
        return None
    try:
        from rapidfuzz.distance import Levenshtein

        errors = sum(Levenshtein.distance(ref, got) for ref, got in pairs)
    except ImportError:  # an upper bound from difflib's matching blocks
        errors = sum(max(len(ref), len(got)) - sum(m.size for m in SequenceMatcher(None, ref, got).get_matching_blocks())
                     for ref, got in pairs)
    return round(errors / total, 4)


def _window(duration: float) -> float:
    return min(DRIFT_WINDOW_S, duration / 3)


def latencies(mix: Mix, rec: RunRecord, live: bool, groups: dict[int, list[dict]]) -> list[tuple[float, float]]:
    """(mix time, seconds) per final. Live: the final's wall time minus the wall time the end of its
    utterance's audio was played. Fast: processing latency: the final's wall time minus the wall time at
    which the processing had got past the end of its audio (from the partial and stats events)."""
    out = []
    if live:
        for k, es in groups.items():
            it = mix.items[k]
            if not it.speech or rec.play_started is None:
                continue
            arrived = rec.play_started + it.speech_end / MODEL_SAMPLE_RATE
            out.append((it.start / MODEL_SAMPLE_RATE, float(es[-1]["wall_time_s"]) - arrived))
        return sorted(out)
    front = [(float(e["wall_time_s"]), _front(e)) for e in rec.events if e.get("type") in ("stats", "partial")]
    walls = np.array([w for w, _ in front])
    pos = np.maximum.accumulate(np.array([p for _, p in front])) if front else np.zeros(0)
    for e in finals(rec.events):
        if not e.get("text") or not len(pos):
            continue
        k = int(np.searchsorted(pos, float(e["end_s"])))
        if k < len(walls):
            out.append((float(e["start_s"]), float(e["wall_time_s"]) - walls[k]))
    return out


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 3) if xs else None


def analyse(mix: Mix, ref: RunRecord, rec: RunRecord, live: bool) -> dict[str, Any]:
    ref_groups = by_item(mix, [e for e in finals(ref.events) if e.get("text")], [(0.0, 0.0)])
    got_f = finals(rec.events)
    pieces = live_offsets(mix, rec, {k: _text(v) for k, v in ref_groups.items()}) if live else [(0.0, 0.0)]
    groups = by_item(mix, [e for e in got_f if e.get("text")], pieces)
    speech_idx = [k for k, it in enumerate(mix.items) if it.speech]
    # utterances in the mix before device loss / the end of the run, and those a live stall swallowed
    stall_windows = []
    if live and rec.play_started:
        for f in rec.faults:
            if f["fault"].startswith("stall"):
                a = f["wall"] - rec.play_started
                stall_windows.append((a, a + f["seconds"]))

    def in_stall(it: Item) -> bool:
        a, b = it.start / MODEL_SAMPLE_RATE, it.end / MODEL_SAMPLE_RATE
        return any(a < w1 + 1.0 and b > w0 for w0, w1 in stall_windows)

    stall_end = max((f["wall"] + f["seconds"] for f in rec.faults if f["fault"].startswith("stall")), default=None)
    lost_at = next((f["wall"] for f in rec.faults if f["fault"].startswith("device lost")), None)
    lost_lines = [(t, line) for t, line in rec.stderr if _device_lost(line)]
    received = [k for k in speech_idx if k in groups]
    front = max((_front(e) for e in rec.events), default=0.0)
    ran_to_end = lost_at is not None if live else front >= mix.duration_s - 1.0
    equal = [k for k in speech_idx if k in groups and _text(groups[k]) == _text(ref_groups.get(k, []))]
    missing = [k for k in speech_idx if k not in groups]
    stats = [e for e in rec.events if e.get("type") == "stats"]
    last = stats[-1] if stats else {}
    known = {"type", "audio_time_s", "wall_time_s", "rtf", "step_compute_ms", "lag_s", "processed_s"}
    counters = {k: v for k, v in last.items() if k not in known}
    lat = latencies(mix, rec, live, groups)
    w = _window(mix.duration_s)
    first = [s for t, s in lat if t < w]
    last_w = [s for t, s in lat if t >= mix.duration_s - w]
    rss = [r for _, r in rec.rss]
    first_final_wall = next((float(e["wall_time_s"]) for e in got_f), None)
    rss_start = next((r for t, r in rec.rss if first_final_wall and t >= first_final_wall), rss[0] if rss else None)
    stderr = [line for _, line in rec.stderr]
    faults_lines = [line for line in stderr if not line.startswith(INFO_PREFIXES)]
    lag = [float(e.get("lag_s") or 0) for e in stats]
    other_types: dict[str, int] = {}
    for e in rec.events:
        if e.get("type") not in ("stats", "partial", "final", "vad"):
            other_types[str(e.get("type"))] = other_types.get(str(e.get("type")), 0) + 1
    return {
        "audio_s": round(mix.duration_s, 1), "clips": len(speech_idx), "nonspeech_items": len(mix.items) - len(speech_idx),
        "finals_expected": len(speech_idx),
        "finals_expected_outside_stall": len([k for k in speech_idx if not in_stall(mix.items[k])]),
        "finals_received": len(received),
        "finals_received_outside_stall": len([k for k in received if not in_stall(mix.items[k])]),
        "finals_equal_reference": len(equal),
        "cer_vs_reference": _cer([(_text(ref_groups.get(k, [])), _text(groups[k])) for k in received]),
        "missing_count": len(missing),
        "missing": [{"clip": mix.items[k].name, "at_s": round(mix.items[k].start / MODEL_SAMPLE_RATE, 1),
                     "in_stall": in_stall(mix.items[k])} for k in missing][:50],
        "ran_to_end": ran_to_end,
        "exit_after_loss_s": round(rec.exited - lost_at, 1) if rec.exited and lost_at else None,
        "exit_after_stall_s": round(rec.exited - stall_end, 1) if rec.exited and stall_end else None,
        "finals_after_stall": len([e for e in got_f if stall_end and float(e["wall_time_s"]) > stall_end]),
        "device_lost_line_before_loss": any(lost_at is None or t < lost_at for t, _ in lost_lines),
        "device_lost_lines_after_loss": len([1 for t, _ in lost_lines if lost_at is not None and t >= lost_at]),
        "finals_in_jsonl": len([e for e in got_f if e.get("text")]),
        "empty_finals_in_jsonl": len([e for e in got_f if not e.get("text")]),
        "finals_in_reference": len([e for e in finals(ref.events) if e.get("text")]),
        "lines_in_txt": len(rec.txt_lines),
        "txt_equals_jsonl": rec.txt_lines == [e["text"] for e in got_f if e.get("text")],
        "nonspeech_finals": sum(len(v) for k, v in groups.items() if not mix.items[k].speech),
        "stdout_lines_read": len(rec.stdout_read),
        "dropped_samples": last.get("dropped_samples"),
        "zeroed_samples": last.get("nonfinite_samples"), "injected_nonfinite": len(mix.nonfinite_at),
        "stats_counters": counters, "other_event_types": other_types,
        "max_lag_s": round(max(lag), 3) if lag else None,
        "rss_mb": {"start": _mb(rss_start), "peak": _mb(max(rss) if rss else None), "end": _mb(rss[-1] if rss else None)},
        "latency": {"kind": "arrival to final (wall)" if live else "processing front to final (wall)",
                    "window_s": round(w), "first_p50": _pct(first, 50), "first_p90": _pct(first, 90),
                    "last_p50": _pct(last_w, 50), "last_p90": _pct(last_w, 90), "n_first": len(first),
                    "n_last": len(last_w)},
        "throughput_x": round(mix.duration_s / max(1e-9, rec.ended - rec.started), 1) if not live else None,
        "wall_s": round(rec.ended - rec.started, 1),
        "exit_code": rec.returncode, "reference_exit_code": ref.returncode,
        "stderr": stderr, "fault_lines": faults_lines,
        "tracebacks": sum("Traceback" in line for line in stderr),
        "faults": [{k: v for k, v in f.items() if k != "wall"} for f in rec.faults],
        "offsets": [(round(a, 2), round(b, 2)) for a, b in pieces] if live else None,
        "notes": rec.notes + [f"reference run: {line}" for _, line in ref.stderr],
    }


def _device_lost(line: str) -> bool:
    """A line that says the input device is gone (not a stall line, not the full disk's 'on device')."""
    low = line.lower()
    return "device" in low and any(w in low for w in ("lost", "gone", "disappeared", "changed", "removed")) \
        and "no space left on device" not in low


def _mb(x: int | None) -> float | None:
    return round(x / 2**20, 1) if x is not None else None


def verdicts(r: dict[str, Any], live: bool) -> list[tuple[str, str, str]]:
    """(fault, the stderr lines about it, verdict) for each fault: ok, or what went wrong."""
    lines = r["fault_lines"]
    injected = {f["fault"].split(" (")[0] for f in r["faults"]}

    def having(*words: str) -> list[str]:
        return [line for line in lines if all(w.lower() in line.lower() for w in words)]

    def one(found: list[str]) -> str:
        return "ok" if len(found) == 1 else f"{len(found)} lines (expected 1)"

    out = []
    full = having("full.srt")
    out.append(("disk full on one output", "; ".join(full) or "(no line)", one(full)))
    so = having("standard output")
    out.append(("stdout closed", "; ".join(so) or "(no line)",
                one(so) if "stdout closed" in injected else "not reached (the run ended first)"))
    if not live:
        nf = having("non-finite")
        zeroed = f"zeroed {r['zeroed_samples']} of {r['injected_nonfinite']}"
        out.append(("non-finite samples", "; ".join(nf) or "(no line)",
                    ("ok" if len(nf) == 1 else f"{len(nf)} lines (expected 1)") + f", {zeroed}"))
    lost = [line for line in lines if _device_lost(line)]
    if "stall" not in injected:
        stall = "not reached (the run ended first)"
    elif r["device_lost_line_before_loss"]:
        stall = "NOT SURVIVED (called a lost device)"
    elif not r["ran_to_end"] and r["exit_after_stall_s"] is not None:
        stall = f"NOT SURVIVED (exited {r['exit_after_stall_s']} s after it, code {r['exit_code']})"
    else:
        told = having("stall") + having("gap")
        stall = f"ok ({r['finals_after_stall']} finals after it, {len(told)} line{'s' if len(told) != 1 else ''})"
    out.append(("stall (SIGSTOP)", "; ".join(having("stall") + having("gap") + lost[:1]) or "(no line)", stall))
    if "overload" not in injected:
        overload = "not reached (the run ended first)"
    elif r["finals_received_outside_stall"] >= r["finals_expected_outside_stall"]:
        overload = "ok (no final missing)"
    else:
        overload = "finals missing"
    out.append(("overload", "; ".join(having("overload") + having("behind") + having("dropped")) or "(no line)",
                overload))
    if live:
        n = r["device_lost_lines_after_loss"]
        dev = [line for line in lines if "device" in line.lower() and "full.srt" not in line]
        out.append(("device lost", "; ".join(dict.fromkeys(lost + dev)) or "(no line)",
                    "not reached (the run ended first)" if "device lost" not in injected
                    else "NOT NOTICED (stopped with SIGINT)" if any("SIGINT" in x for x in r["notes"])
                    else ("ok" if n == 1 else f"{n} lines after the loss (expected 1)")
                    + f", exit {r['exit_code']} {r['exit_after_loss_s']} s after it"))
    return out


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def render(doc: dict[str, Any]) -> str:
    r = doc["result"]
    live = doc["mode"] == "live"
    lat = r["latency"]
    rows = [
        ("audio", f"{r['audio_s'] / 60:.1f} min: {r['clips']} clips, {r['nonspeech_items']} non-speech pieces"),
        ("finals expected / received", f"{r['finals_expected']} / {r['finals_received']}"
         + (f" (outside the stall: {r['finals_expected_outside_stall']} / {r['finals_received_outside_stall']})"
            if live else "")),
        ("finals equal to the reference run", f"{r['finals_equal_reference']} of {r['finals_expected']} "
         f"(CER of the received against it: {r['cer_vs_reference']})"),
        ("finals in ok.jsonl / lines in ok.txt", f"{r['finals_in_jsonl']} / {r['lines_in_txt']} "
         f"(same text: {'yes' if r['txt_equals_jsonl'] else 'NO'}); reference {r['finals_in_reference']}; "
         f"empty finals {r['empty_finals_in_jsonl']}; on non-speech {r['nonspeech_finals']}"),
        ("dropped samples", str(r["dropped_samples"])),
        ("zeroed (non-finite) samples", f"{r['zeroed_samples']} (injected {r['injected_nonfinite'] if not live else 0})"),
        ("other stats counters", json.dumps({k: v for k, v in r["stats_counters"].items()
                                             if k not in ("dropped_samples", "nonfinite_samples")}) or "-"),
        ("max lag (stats lag_s)", f"{r['max_lag_s']} s"),
        ("RSS start / peak / end", " / ".join(f"{x} MB" for x in r["rss_mb"].values())),
        (f"latency ({lat['kind']}) p50 / p90", f"first {_span(lat['window_s'])} {lat['first_p50']} / "
         f"{lat['first_p90']} s, last {_span(lat['window_s'])} {lat['last_p50']} / {lat['last_p90']} s"),
        ("wall time", f"{r['wall_s']} s" + (f" ({r['throughput_x']}x real time)" if r["throughput_x"] else "")),
        ("exit code", f"{r['exit_code']} (reference run {r['reference_exit_code']})"),
        ("stderr lines", str(len(r["stderr"])) + (f", {r['tracebacks']} TRACEBACKS" if r["tracebacks"] else "")),
    ]
    w = max(len(a) for a, _ in rows)
    g = doc.get("git") or {}
    out = [f"streamer bench --soak: {doc['command']}", f"machine: {doc['machine']}",
           f"code: {g.get('commit')}" + (f" + uncommitted changes in {len(g['changed'])} files" if g.get("changed") else ""),
           f"load average: start {doc['loadavg_start']}, end {doc['loadavg_end']}", ""]
    out += [f"  {a:<{w}}  {b}" for a, b in rows]
    out += ["", "  faults:"]
    out += [f"    {f}: {verdict}  <- {line}" for f, line, verdict in doc["verdicts"]]
    out += ["", "  stderr:"] + [f"    {line}" for line in r["stderr"]]
    if r["missing"]:
        out += ["", f"  missing finals ({r.get('missing_count', len(r['missing']))}): " + ", ".join(
            f"{m['clip']} @ {m['at_s']} s{' (stall)' if m['in_stall'] else ''}" for m in r["missing"][:12])]
    out += [f"  note: {n}" for n in r["notes"]]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    return {**host(), "nice": os.nice(0)}


def git_state() -> dict[str, Any]:
    """The commit measured, and the files changed on top of it (the soak runs the working tree)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "changed": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]}


def run_soak(minutes: float, live: bool = False, model: str = "demo", folder: Path | None = None,
             seed: int = 0, progress: bool = True, command: str = "") -> dict[str, Any]:
    """Build the mix, run the reference and the soak; the report as a dict (render() prints it)."""
    own = folder is None
    work = Path(tempfile.mkdtemp(prefix="streamer-soak-")) if folder is None else folder
    work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"command": command or f"streamer bench --soak {minutes:g}" + (" --soak-live" if live else ""),
                           "mode": "live" if live else "fast", "minutes": minutes, "model": model,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine(),
                           "loadavg_start": loadavg(), "git": git_state()}
    try:
        # live: no non-finite samples (the sound server converts the stream to its own sample format first)
        mix = build_mix(minutes, seed, TAIL_LIVE_S if live else TAIL_FAST_S, nonfinite=not live)
        wav = write_wav(mix, work / "mix.wav")
        if progress:
            say(f"soak: {mix.duration_s / 60:.1f} min mix, {len(mix.speech)} clips; reference run (fast, no faults) ...")
        ref = reference_run(model, wav, work, timeout_s=max(600.0, minutes * 60))
        if progress:
            say(f"soak: reference {len(finals(ref.events))} finals in {ref.ended - ref.started:.0f} s; "
                f"{'live' if live else 'accelerated'} run with faults ...")
        timeout = mix.duration_s + 180 if live else max(600.0, minutes * 60 * 0.5 + 300)
        rec = soak_run(model, mix, wav, work, live, timeout, progress)
        doc["streamer_command"] = " ".join(Path(c).name if c.startswith(str(work)) else c for c in rec.command)
        doc["result"] = analyse(mix, ref, rec, live)
        doc["verdicts"] = verdicts(doc["result"], live)
    finally:
        doc["loadavg_end"] = loadavg()
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return doc


def soak_main(args, argv: list[str]) -> int:
    if not args.soak > 0 or args.soak > 24 * 60:
        from streamer.errors import ConfigError

        raise ConfigError(f"--soak {args.soak:g}: minutes must be more than 0 and at most a day", "e.g. --soak 60")
    explicit = any(a == "--model" or a.startswith("--model=") for a in argv)
    model = args.model if explicit else "demo"
    folder = Path(args.out) / "soak-work" if args.debug and args.out else None
    doc = run_soak(args.soak, live=args.soak_live, model=model, folder=folder,
                   command="streamer bench " + " ".join(argv))
    path = Path(args.json) if args.json else (Path(args.out) if args.out else repo_root() / "benchmarks" / "results") \
        / f"soak-{doc['mode']}-{args.soak:g}min.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(render(doc))
    say(f"wrote {path}")
    return 0
