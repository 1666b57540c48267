"""N concurrent real-time vosk clients through `streamer serve --ray` with 1 and 2 replicas (and, as the
baseline, plain `streamer serve` on the same machine): partial latency p50 / p95 as `streamer bench --streams`
measures it (streamer/bench/streams.py: the same clients, the same programs of demo clips).

    .venv/bin/python benchmarks/ray_serve_streams.py --streams 2,4,8 --seconds 15 [--model demo]

Starts its own local cluster (`ray start --head --num-cpus C` in a temp dir, in a session of its own) and
ends that session's processes at the end, also on failure. Each replica reserves --replica-cpus CPUs (Ray
sets its torch threads to that, at least 1). Prints a markdown table; --json writes the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamer.bench.streams import _clients  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def end_session(sid: int) -> None:
    """SIGTERM, then SIGKILL, the processes of session `sid` (not `ray stop`: it ends every Ray on the machine)."""
    def members() -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(f[3]) == sid and f[0] != "Z":
                    out.append(int(d.name))
        return out

    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        for pid in members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while members() and time.monotonic() < deadline:
            time.sleep(0.1)


class Server:
    def __init__(self, args: list[str], port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(300) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.lines[-20:]))
        if self.port == 0:
            m = re.search(r"websocket on ws://[^:]+:(\d+)", "".join(self.lines))
            assert m
            self.port = int(m.group(1))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("streamer: serving"):
                self.ready.set()
        self.ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def measure(port: int, n: int, seconds: float, chunk_s: float, hop_s: float) -> dict:
    t = time.monotonic()
    streams = asyncio.run(asyncio.wait_for(_clients(f"ws://127.0.0.1:{port}", n, seconds, chunk_s, hop_s),
                                           seconds * 4 + 120))
    lat = np.asarray([x for s in streams for x in s.pop("_lat")])
    return {"streams": n, "partial_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "partial_p95_ms": round(float(np.percentile(lat, 95)), 1),
            "worst_stream_p95_ms": max(s["partial_p95_ms"] for s in streams),
            "behind_max_ms": max(s["behind_max_ms"] for s in streams), "wall_s": round(time.monotonic() - t, 1),
            "loadavg": os.getloadavg()[0], "finals": [" ".join(s["finals"]) for s in streams]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default="2,4,8")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--model", default="demo")
    p.add_argument("--replicas", default="1,2")
    p.add_argument("--replica-cpus", type=float, default=1.0)
    p.add_argument("--cluster-cpus", type=int, default=os.cpu_count() or 2)
    p.add_argument("--chunk-ms", type=float, default=50.0)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    counts = [int(x) for x in a.streams.split(",")]
    rows: list[dict] = []
    common = ["--model", a.model, "--max-sessions", str(max(counts))]
    hop_s = 0.16
    if not a.no_baseline:
        server = Server([*common, "--websocket", "ws://127.0.0.1:0"], 0)
        try:
            for n in counts:
                rows.append({"setup": "streamer serve (no Ray)", **measure(server.port, n, a.seconds, a.chunk_ms / 1000, hop_s)})
                print(rows[-1], file=sys.stderr, flush=True)
        finally:
            server.stop()
    ray = str(Path(sys.executable).with_name("ray"))
    temp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    gcs = free_port()
    # Token authentication with a token of its own (no ~/.ray/auth_token read or written).
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    # In a session of its own: the cluster's processes (GCS, raylet, Serve, replicas) are that session's.
    start = subprocess.Popen([ray, "start", "--head", "--num-cpus", str(a.cluster_cpus), "--port", str(gcs),
                              "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                             start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        out = start.communicate(timeout=120)[0]
        if start.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{out}")
        for r in [int(x) for x in a.replicas.split(",")]:
            port = free_port()
            server = Server([*common, "--ray", "--ray-address", f"127.0.0.1:{gcs}", "--websocket", f"ws://127.0.0.1:{port}",
                             "--min-replicas", str(r), "--max-replicas", str(r), "--replica-cpus", str(a.replica_cpus)], port)
            try:
                for n in counts:
                    rows.append({"setup": f"--ray, {r} replica{'s' if r > 1 else ''} x {a.replica_cpus:g} CPU",
                                 **measure(port, n, a.seconds, a.chunk_ms / 1000, hop_s)})
                    print(rows[-1], file=sys.stderr, flush=True)
            finally:
                server.stop()
    finally:
        if start.poll() is None:
            start.kill()
        end_session(start.pid)
        shutil.rmtree(temp, ignore_errors=True)
    print("| setup | N | partial p50 | p95 (worst stream) | clients behind (max) | load avg |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['setup']} | {r['streams']} | {r['partial_p50_ms']:.0f} ms | {r['worst_stream_p95_ms']:.0f} ms | "
              f"{r['behind_max_ms']:.0f} ms | {r['loadavg']:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
