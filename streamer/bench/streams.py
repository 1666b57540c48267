"""`streamer bench --streams N[,N...]`: N concurrent real-time-paced vosk WebSocket clients against a real
`streamer serve` process (one per run, so its CPU and its log are that run's), batched and one window at a
time.

Each client plays a program of the demo clips (rotated per stream, 0.8 s of silence after each) as 16 kHz
16-bit PCM in `--streams-chunk-ms` messages at real-time pace, stream i starting i/N of a hop after stream 0,
and reads the one reply to each message (as vosk clients do). It asks for the streamer timing extension
(config "streamer_timing": the stream seconds each partial shows and commits).

Partial latency (as in metrics.py): the sound at stream second p was made at t0 + p (t0: the stream's
start; the message it travels in counts as latency). A partial that shows audio up to u (tentative_until_s)
received at time r gives each 20 ms frame newly shown, from the previous partial's u of the same utterance
(for an utterance's first partial: from its committed_until_s minus one hop, where its first window
starts), latency r - (t0 + frame end). p50 / p95 over the frames of each stream; the run's p95 is the worst
stream's. Also: RTF (server CPU seconds per second of audio; model busy seconds per second of audio),
dropped samples (the server's log), how far the clients fell behind their real-time schedule (the server
slows a client it cannot keep up with: backpressure), finals per stream (compared across batch modes).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

FRAME_S = 0.02
SILENCE_S = 0.8
P95_LIMIT_MS = 600.0


def say(msg: str) -> None:
    print(f"streamer bench: {msg}", file=sys.stderr, flush=True)


def program(index: int, seconds: float) -> np.ndarray:
    """Stream `index`'s audio: the demo clips from clip `index` on, each followed by silence, `seconds` long."""
    import soundfile as sf

    clips_dir = Path(__file__).resolve().parents[2] / "assets" / "demo_clips"
    clips = [sf.read(str(f), dtype="float32")[0] for f in sorted(clips_dir.glob("demo[0-9]_*.wav"))]
    parts: list[np.ndarray] = []
    total, k = 0, index
    while total < seconds * 16000:
        clip = clips[k % len(clips)]
        parts += [clip, np.zeros(int(SILENCE_S * 16000), np.float32)]
        total += len(clip) + int(SILENCE_S * 16000)
        k += 1
    return np.concatenate(parts)[: int(seconds * 16000)]


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """`streamer serve --websocket ws://127.0.0.1:0` in a subprocess; its stderr collected."""

    def __init__(self, model: str, batch: bool, max_sessions: int, extra: list[str]) -> None:
        cmd = [sys.executable, "-m", "streamer", "serve", "--model", model, "--websocket", "ws://127.0.0.1:0",
               "--max-sessions", str(max_sessions), "--batch" if batch else "--no-batch", *extra]
        self.command = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, encoding="utf-8", errors="replace")
        self.lines: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(300) or self.port is None:
            self.stop()
            raise RuntimeError("streamer serve did not start:\n" + "".join(self.lines[-20:]))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"websocket on ws://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()

    def cpu_s(self) -> float:
        return _cpu_s(self.proc.pid)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        return "".join(self.lines)


async def _client(uri: str, index: int, audio: np.ndarray, chunk_s: float, t_start: float, hop_s: float) -> dict:
    import websockets

    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    step = int(chunk_s * 16000) * 2
    lat: list[float] = []
    finals: list[str] = []
    behind = 0.0
    partials = 0
    async with websockets.connect(uri, max_size=None) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000, "streamer_timing": True}}))
        now = time.monotonic()
        if t_start > now:
            await asyncio.sleep(t_start - now)
        t0 = time.monotonic()  # stream second 0
        shown, segment = 0.0, None
        for i in range(0, len(pcm), step):
            due = t0 + (i + step) / 32000  # the sound of this message's last sample has been made
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            behind = max(behind, time.monotonic() - due)
            await ws.send(pcm[i:i + step])
            reply = json.loads(await ws.recv())
            received = time.monotonic()
            if "text" in reply:
                if reply["text"]:
                    finals.append(reply["text"])
                continue
            ext = reply.get("streamer")
            if not ext:
                continue
            partials += 1
            u = float(ext["tentative_until_s"])
            seg = ext.get("segment_id")
            if seg != segment:  # an utterance's first partial: its first window starts a hop before its commit
                segment, shown = seg, max(0.0, float(ext["committed_until_s"]) - hop_s)
            frames = np.arange(shown + FRAME_S, u + 1e-9, FRAME_S)
            lat += list((received - (t0 + frames)) * 1000.0)
            shown = max(shown, u)
        await ws.send('{"eof" : 1}')
        last = json.loads(await ws.recv())
        if last.get("text"):
            finals.append(last["text"])
    a = np.asarray(lat) if lat else np.asarray([np.nan])
    return {"stream": index, "frames": len(lat), "partials": partials,
            "partial_p50_ms": round(float(np.percentile(a, 50)), 1), "partial_p95_ms": round(float(np.percentile(a, 95)), 1),
            "behind_max_ms": round(behind * 1000, 1), "finals": finals, "_lat": lat}


async def _clients(uri: str, n: int, seconds: float, chunk_s: float, hop_s: float) -> list[dict]:
    start = time.monotonic() + 0.5
    tasks = [_client(uri, i, program(i, seconds), chunk_s, start + hop_s * i / n, hop_s) for i in range(n)]
    return list(await asyncio.gather(*tasks))


def _log_figures(log: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = re.search(r"model calls: (\d+) windows in (\d+) calls \(mean batch ([\d.]+)\), busy ([\d.]+) s", log)
    if m:
        out.update(windows=int(m.group(1)), calls=int(m.group(2)), mean_batch=float(m.group(3)), model_busy_s=float(m.group(4)))
    m = re.search(r"largest (\d+)\), model busy [\d.]+ s, longest wait in queue (\d+) ms", log)
    if m:
        out.update(largest_batch=int(m.group(1)), longest_queue_wait_ms=int(m.group(2)))
    out["dropped_samples"] = sum(int(x) for x in re.findall(r"(\d+) samples dropped", log))
    out["finals_dropped"] = sum(int(x) for x in re.findall(r"(\d+) finals dropped", log))
    return out


def run_one(model: str, batch: bool, n: int, seconds: float, chunk_ms: float, hop_s: float, extra: list[str]) -> dict:
    from streamer.bench.suite import loadavg

    server = ServerProcess(model, batch, n, extra)
    try:
        load0 = loadavg()
        cpu0, wall0 = server.cpu_s(), time.monotonic()
        streams = asyncio.run(_clients(f"ws://127.0.0.1:{server.port}", n, seconds, chunk_ms / 1000, hop_s))
        cpu = server.cpu_s() - cpu0
        wall = time.monotonic() - wall0
    finally:
        log = server.stop()
    lat = np.asarray([x for s in streams for x in s.pop("_lat")])
    row: dict[str, Any] = {
        "model": model, "batch": batch, "streams": n, "audio_s_per_stream": seconds, "chunk_ms": chunk_ms,
        "partial_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "partial_p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "worst_stream_p95_ms": max(s["partial_p95_ms"] for s in streams),
        "behind_max_ms": max(s["behind_max_ms"] for s in streams),
        "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "cpu_cores_used": round(cpu / wall, 2),
        "rtf_cpu": round(cpu / (n * seconds), 3), "loadavg_before": load0, "loadavg_after": loadavg(),
        **_log_figures(log), "per_stream": streams,
    }
    if row.get("model_busy_s") is not None:
        row["rtf_model"] = round(row["model_busy_s"] / (n * seconds), 3)
    row["p95_ok"] = row["worst_stream_p95_ms"] <= P95_LIMIT_MS
    return row


def max_streams(rows: list[dict]) -> int:
    """Largest N measured whose worst stream's partial p95 is within the limit (and every smaller N too)."""
    best = 0
    for r in sorted(rows, key=lambda r: r["streams"]):
        if not r["p95_ok"]:
            break
        best = r["streams"]
    return best


def plot(rows: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {True: "o-", False: "s--"}
    for model in sorted({r["model"] for r in rows}):
        for batch in (True, False):
            pts = sorted((r["streams"], r["worst_stream_p95_ms"], r["partial_p50_ms"]) for r in rows
                         if r["model"] == model and r["batch"] == batch)
            if pts:
                label = f"{Path(model).name} {'batched' if batch else 'one at a time'}"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[batch], label=f"{label}: p95")
                ax.plot([p[0] for p in pts], [p[2] for p in pts], styles[batch], alpha=0.4, label=f"{label}: p50")
    ax.axhline(P95_LIMIT_MS, color="red", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("partial latency (ms)")
    ax.set_title("streamer serve: partial latency vs streams (2-core CPU)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(rows: list[dict]) -> str:
    head = ("| model | batching | N | partial p50 | p95 (worst stream) | clients behind (max) | CPU cores | RTF (CPU) "
            "| RTF (model) | mean batch | dropped |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    body = ""
    for r in sorted(rows, key=lambda r: (r["model"], not r["batch"], r["streams"])):
        body += (f"| {Path(r['model']).name} | {'batched' if r['batch'] else 'one at a time'} | {r['streams']} | "
                 f"{r['partial_p50_ms']:.0f} ms | {r['worst_stream_p95_ms']:.0f} ms | {r['behind_max_ms']:.0f} ms | "
                 f"{r['cpu_cores_used']} | {r['rtf_cpu']} | {r.get('rtf_model', '-')} | {r.get('mean_batch', '-')} | "
                 f"{r['dropped_samples']} |\n")
    return head + body


def streams_main(args: Any, argv: list[str]) -> int:
    from streamer.bench.models import model_folder
    from streamer.bench.report import write_json
    from streamer.bench.suite import loadavg, machine

    counts = sorted({int(x) for x in args.streams.split(",") if x.strip()})
    if not counts or counts[0] < 1:
        from streamer.errors import ConfigError

        raise ConfigError(f"--streams {args.streams!r} is not a list of stream counts", "e.g. --streams 1,2,4,8")
    modes = [args.batch] if args.batch is not None else [True, False]
    model = model_folder(args.model)
    hop_s = args.hop_ms / 1000 if getattr(args, "hop_ms", None) else 0.16
    extra = []
    for flag in ("hop_ms", "lookahead_ms", "threads"):
        if getattr(args, flag, None):
            extra += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.batch_wait_ms is not None:
        extra += ["--batch-wait-ms", str(args.batch_wait_ms)]
    doc: dict[str, Any] = {"command": "streamer bench " + " ".join(argv), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                           "machine": machine(), "loadavg_start": loadavg(), "rows": []}
    for batch in modes:
        for n in counts:
            say(f"{args.model}, {'batched' if batch else 'one window at a time'}, {n} streams x {args.streams_s:g} s "
                f"(load {loadavg()})")
            row = run_one(model, batch, n, args.streams_s, args.streams_chunk_ms, hop_s, extra)
            row["model"] = args.model
            doc["rows"].append(row)
            say(f"  p50 {row['partial_p50_ms']} ms, worst p95 {row['worst_stream_p95_ms']} ms, behind "
                f"{row['behind_max_ms']} ms, CPU {row['cpu_cores_used']} cores, mean batch {row.get('mean_batch')}")
            if not row["p95_ok"] and row["behind_max_ms"] > 5000:
                say("  far behind real time: larger N skipped")
                break
    doc["max_streams"] = {f"{args.model} {'batched' if b else 'one at a time'}":
                          max_streams([r for r in doc["rows"] if r["batch"] == b]) for b in modes}
    by_n: dict[int, dict[bool, list[str]]] = {}
    for r in doc["rows"]:
        by_n.setdefault(r["streams"], {})[r["batch"]] = [" ".join(s["finals"]) for s in r["per_stream"]]
    doc["finals_equal_across_modes"] = {str(n): v[True] == v[False] for n, v in by_n.items() if len(v) == 2}
    doc["loadavg_end"] = loadavg()
    out = Path(args.out or f"benchmarks/results/streams_{time.strftime('%Y-%m-%d')}")
    path = out / f"streams_{Path(args.model).name}.json"
    write_json(doc, path)
    print(markdown(doc["rows"]))
    print("max N with partial p95 <= 600 ms:", doc["max_streams"])
    say(f"wrote {path}")
    return 0
