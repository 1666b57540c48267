"""Start-up and control latency of the desk workflow, on the real audio stack (a private PulseAudio virtual
microphone, streamer.bench.pulse):

- launch -> listening: `python -m streamer --model M --no-tui` spawned until its "listening on" line (the
  model loaded and warmed up, the device open and delivering), for the demo model and for the
  wav2vec2-base-size random-init model of the benchmark (streamer.bench.models, int8). Cold: the first run
  with an empty Python bytecode cache (PYTHONPYCACHEPREFIX in a fresh folder: every module of torch,
  transformers and streamer compiled again, as on the first run after installing); the OS page cache is
  not dropped (nothing machine-wide is touched), so the files themselves are read from memory. Warm: the
  median of the next runs. Where the time goes: the phases of a warm load in one process.
- `streamer ctl status` round trip: the whole command (a Python process, the socket, the answer), and the
  socket alone (streamer.app.control.request in this process).
- the CPU a resident instance uses while paused (--start-paused, the microphone open);
- push-to-talk: `ctl resume`, a sentence played into the mic, `ctl pause` while it is still being spoken
  (once the first partial shows), and the time from the release (the ctl process spawned) to the final on
  streamer's stdout; p50 / p95 over --presses presses.

    .venv/bin/python benchmarks/control_latency.py [--warm-runs 3] [--presses 10] [--models demo,base]

Prints a markdown summary (and --json PATH for the raw figures).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamer.bench.pulse import PulseMic  # noqa: E402
from streamer.bench.suite import host, loadavg  # noqa: E402

#: How long the CPU use of a paused resident instance is measured.
PAUSED_CPU_WINDOW_S = 10.0

PHASES = r'''
import sys, time
t0 = last = time.perf_counter()
out = []
def mark(what):
    global last
    now = time.perf_counter(); out.append((what, round(now - last, 3))); last = now
import streamer.cli.main
from streamer.model.runtime import configure_openmp; configure_openmp()
mark("python + streamer.cli")
import numpy; mark("import numpy")
import torch; mark("import torch")
import transformers; mark("import transformers")
from transformers import AutoConfig, AutoModelForCTC, AutoProcessor; mark("transformers Auto classes")
from streamer.core.config import ModelConfig
from streamer.model.inference import CTCModel
from streamer.model.loading import _load_processor, _load_weights, _place, pick_dtype, resolve_source
name = sys.argv[1]
cfg = ModelConfig(name=name)
target = str(resolve_source(name).path)
processor = _load_processor(target, target); mark("processor (config, vocabulary)")
model = _load_weights(target, target, processor); mark("weights")
n = sum(p.numel() for p in model.parameters())
model, q = _place(model, cfg, "cpu", pick_dtype("auto", "cpu"), n); mark("int8 quantisation" if q else "placement")
ctc = CTCModel(model, processor, name, "cpu", torch.float32, q, cfg, parameters=n)
ctc.warmup(); mark("warm-up pass")
import sounddevice; mark("import sounddevice (PortAudio)")
import json; print(json.dumps(out))
'''


class Proc:
    """A streamer process whose stdout / stderr lines are read on threads with their arrival time."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.out: queue.Queue[tuple[float, str]] = queue.Queue()
        self.err: queue.Queue[tuple[float, str]] = queue.Queue()
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, q), daemon=True).start()

    @staticmethod
    def _read(stream, q) -> None:
        for line in stream:
            q.put((time.monotonic(), line.rstrip("\n")))

    def wait(self, q: queue.Queue, prefix: str, timeout: float = 300) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                at, line = q.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith(prefix):
                return at, line
        raise RuntimeError(f"no {prefix!r} line (exit {self.proc.poll()})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def streamer_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamer", *args]


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far: unlike wall time, hardly changed
    by other processes sharing the cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def launch_to_listening(model: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) from spawning streamer to its "listening on" line."""
    p = Proc(streamer_argv("--model", model, "--no-tui", "--no-control"), env)
    try:
        at, _ = p.wait(p.err, "streamer: listening on ")
        return at - p.started, cpu_s(p.proc.pid)
    finally:
        p.stop()


def phases(model: str, env: dict[str, str]) -> list[tuple[str, float]]:
    out = subprocess.run([sys.executable, "-c", PHASES, model], env=env, capture_output=True, text=True, check=True,
                         timeout=600).stdout
    return [tuple(x) for x in json.loads(out.strip().splitlines()[-1])]


def ctl(env: dict[str, str], *args: str) -> float:
    t0 = time.monotonic()
    subprocess.run(streamer_argv("ctl", *args), env=env, check=True, capture_output=True, timeout=60)
    return time.monotonic() - t0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def sentence_clip(folder: Path) -> Path:
    import soundfile as sf

    raw = folder / "sentence.raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw),
                    "the red house stands on the hill and please open the window now"], check=True)
    audio, rate = sf.read(str(raw), dtype="float32")
    wav = folder / "sentence.wav"
    sf.write(str(wav), np.concatenate([np.zeros(int(0.3 * rate), np.float32), audio]), rate)
    return wav


def push_to_talk(mic: PulseMic, env: dict[str, str], wav: Path, presses: int) -> dict:
    jsonl = Path(env["XDG_RUNTIME_DIR"]) / "ptt.jsonl"
    p = Proc(streamer_argv("--model", "demo", "--no-tui", "--start-paused", "--output", str(jsonl)), env)
    try:
        p.wait(p.err, "streamer: ready, ")
        p.wait(p.err, "streamer: listening on ")
        cpu0, t0 = cpu_s(p.proc.pid), time.monotonic()
        time.sleep(PAUSED_CPU_WINDOW_S)  # the measurement window itself
        paused_cpu = (cpu_s(p.proc.pid) - cpu0) / (time.monotonic() - t0)
        process_round_trip = [ctl(env, "status") for _ in range(10)]
        from streamer.app.control import request

        socket_round_trip = []
        for _ in range(50):
            t0 = time.perf_counter()
            request("status", env=env)
            socket_round_trip.append(time.perf_counter() - t0)
        from_release = []
        for _ in range(presses):
            ctl(env, "resume")
            seen = _events(jsonl)
            player = mic.play(wav, wait=False)
            while not any(e["type"] == "partial" and len(e["committed_text"]) >= 5 for e in _events(jsonl)[len(seen):]):
                time.sleep(0.01)
            released = time.monotonic()
            ctl(env, "pause")
            arrived, _ = p.wait(p.out, "", timeout=60)
            from_release.append(arrived - released)
            player.wait(60)
        return {"paused_cpu_share": paused_cpu, "ctl_process_s": process_round_trip, "socket_s": socket_round_trip,
                "release_to_final_s": from_release}
    finally:
        p.stop()


def _events(jsonl: Path) -> list[dict]:
    if not jsonl.exists():
        return []
    return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.endswith("}")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="demo,base")
    ap.add_argument("--warm-runs", type=int, default=3)
    ap.add_argument("--presses", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from streamer.bench.models import model_folder

    results: dict = {"host": host(), "load_before": loadavg(), "launch": {}, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="sr-b-", dir="/tmp") as tmp:
        folder = Path(tmp)
        mic = PulseMic(folder / "pulse")
        try:
            env = dict(mic.env, PYTHONPATH=str(REPO), XDG_RUNTIME_DIR=str(folder), XDG_CONFIG_HOME=str(folder / "cfg"))
            for key in args.models.split(","):
                model = model_folder(key)
                cold_env = dict(env, PYTHONPYCACHEPREFIX=str(folder / f"pycache-{key}"))
                cold, cold_cpu = launch_to_listening(model, cold_env)
                warm_runs = [launch_to_listening(model, env) for _ in range(args.warm_runs)]
                warm, warm_cpu = [w for w, _ in warm_runs], [c for _, c in warm_runs]
                results["launch"][key] = {"cold_s": cold, "warm_s": warm, "cold_cpu_s": cold_cpu, "warm_cpu_s": warm_cpu}
                results["phases"][key] = phases(model, env)
                print(f"{key}: cold {cold:.2f} s ({cold_cpu:.2f} CPU s), warm {[round(w, 2) for w in warm]} "
                      f"({[round(c, 2) for c in warm_cpu]} CPU s)", file=sys.stderr)
            results["ptt"] = push_to_talk(mic, env, sentence_clip(folder), args.presses)
        finally:
            mic.stop()
    results["load_after"] = loadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"host: {results['host']['cpu']}, {results['host']['cores']} cores; load average before "
          f"{results['load_before']}, after {results['load_after']}\n")
    print("| model | launch -> listening, cold: wall (CPU) | warm, median of %d: wall (CPU) |\n| --- | --- | --- |"
          % args.warm_runs)
    for key, r in results["launch"].items():
        print(f"| {key} | {r['cold_s']:.2f} s ({r['cold_cpu_s']:.2f} s) | {statistics.median(r['warm_s']):.2f} s "
              f"({statistics.median(r['warm_cpu_s']):.2f} s) |")
    for key, ph in results["phases"].items():
        total = sum(s for _, s in ph)
        print(f"\nwhere a warm start of {key} goes ({total:.2f} s in one process): "
              + ", ".join(f"{what} {s:.2f} s" for what, s in ph))
    ptt = results["ptt"]
    print(f"\nstreamer ctl status, whole command: p50 {pct(ptt['ctl_process_s'], .5) * 1000:.0f} ms, p95 "
          f"{pct(ptt['ctl_process_s'], .95) * 1000:.0f} ms; the socket alone: p50 "
          f"{pct(ptt['socket_s'], .5) * 1000:.2f} ms, p95 {pct(ptt['socket_s'], .95) * 1000:.2f} ms")
    print(f"a resident instance while paused (demo, the microphone open): {ptt['paused_cpu_share'] * 100:.1f} % "
          f"of one core over {PAUSED_CPU_WINDOW_S:g} s")
    r = ptt["release_to_final_s"]
    print(f"push-to-talk, release (streamer ctl pause spawned) -> final on stdout, {len(r)} presses: p50 "
          f"{pct(r, .5) * 1000:.0f} ms, p95 {pct(r, .95) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
