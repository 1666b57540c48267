"""`streamer serve --ray`: the vosk WebSocket endpoint as a Ray Serve application. The options it deploys with
and its one-line errors (fast), and a real local cluster (`ray start --head`) with two replicas, two vosk
clients at once at real-time pace (slow): each gets its own clip's text, each connection lives on one
replica, and SIGTERM removes the application and Serve's proxy. Every wait is bounded; the cluster is
stopped even when a test fails (its own processes only: not `ray stop`, which would end every Ray on the
machine)."""

from __future__ import annotations

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

import pytest

from streamer.core.config import Config
from streamer.errors import ConfigError
from streamer.server.common import Limits
from streamer.server.run import ServeOptions

from desktop_fixtures import streamer_env
from helpers import wait_for

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from streamer.server.ray_serve import REPLICA_HEADER, RayOptions, deployment_options  # noqa: E402

TIMEOUT_S = 60.0


# -- options and errors (no cluster) --------------------------------------------------------------------------

def test_a_connection_is_a_request_so_serve_limits_and_scales_on_sessions():
    options = ServeOptions(Config(), websocket="ws://127.0.0.1:2700", limits=Limits(max_sessions=6))
    d = deployment_options(options, RayOptions(min_replicas=2, max_replicas=5, replica_cpus=0.5, replica_gpus=0.25))
    assert d["max_ongoing_requests"] == 6  # --max-sessions per replica
    assert d["max_queued_requests"] == 30  # waiting for a session or a replica: at most the full capacity
    assert d["autoscaling_config"] == {"min_replicas": 2, "initial_replicas": 2, "max_replicas": 5,
                                       "target_ongoing_requests": 3.0}
    assert d["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    zero = deployment_options(options, RayOptions(min_replicas=0, max_replicas=1, target_sessions=2))
    assert zero["autoscaling_config"]["initial_replicas"] == 1 and zero["autoscaling_config"]["min_replicas"] == 0
    assert zero["autoscaling_config"]["target_ongoing_requests"] == 2


@pytest.mark.parametrize("bad", [dict(min_replicas=-1), dict(min_replicas=3, max_replicas=2), dict(max_replicas=0),
                                 dict(target_sessions=0.0), dict(target_sessions=float("nan")),
                                 dict(replica_cpus=-1.0), dict(replica_gpus=float("inf"))])
def test_bad_ray_options_are_refused(bad):
    with pytest.raises(ConfigError):
        RayOptions(**bad).validate()


@pytest.mark.parametrize("argv, says", [
    (["--websocket", "ws://127.0.0.1:2700", "--min-replicas", "2"], "need --ray"),
    (["--ray", "--wyoming", "tcp://127.0.0.1:10300", "--websocket", "ws://127.0.0.1:2700"], "not served through Ray"),
    (["--ray", "--websocket", "ws://127.0.0.1:0"], "fixed port"),
    (["--ray", "--websocket", "ws://127.0.0.1:2700", "--min-replicas", "3", "--max-replicas", "2"], "--max-replicas"),
])
def test_serve_ray_refuses_what_it_cannot_do_before_joining_a_cluster(argv, says):
    from streamer.cli.serve import main

    with pytest.raises(ConfigError, match=re.escape(says)):
        main(["--model", "demo", *argv])


# -- a real local cluster -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def session_members(sid: int) -> list[int]:
    """The processes of session `sid` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def end_session(sid: int) -> None:
    """SIGTERM every process of session `sid`, SIGKILL what is left after 5 s. Not `ray stop`: that ends every
    Ray process on the machine, other people's clusters (and tests) included."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid in session_members(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not session_members(sid):
            return


@pytest.fixture(scope="module")
def ray_cluster():
    """`ray start --head` with 2 CPUs in a temp dir of its own, in a session of its own; yields its address.
    However the tests end, every process of that session (GCS, raylet, agents, Serve's controller, proxy and
    replicas: all started from it) is stopped, with a bound."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the cluster's processes")
    temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's Unix socket paths must fit 107 bytes
    port = free_port()
    # Token authentication, as Ray sets up new clusters, with a token of its own (no ~/.ray/auth_token is
    # read or written: whether one exists would decide the mode otherwise).
    env = streamer_env(temp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    start = subprocess.Popen([ray_cli(), "start", "--head", "--num-cpus", "2", "--port", str(port),
                              "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out = start.communicate(timeout=120)[0]
        assert start.returncode == 0, out
        yield f"127.0.0.1:{port}", env, temp
    finally:
        if start.poll() is None:
            start.kill()
            start.wait(10)
        end_session(start.pid)
        shutil.rmtree(temp, ignore_errors=True)


class ServeProcess:
    """`streamer serve --ray ...` with its stderr collected by a thread (so no read ever blocks a test)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", *args], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        wait_for(lambda: any(x.startswith(prefix) for x in self.lines) or self.proc.poll() is not None,
                 f"{prefix!r} on stderr", timeout)
        found = [x for x in self.lines if x.startswith(prefix)]
        assert found, self.text()
        return found[0]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.reader.join(10)


async def vosk_client(port: int, data: bytes, query: str = "") -> dict:
    """A vosk client at real-time pace (100 ms messages): one reply per message, eof, close; also the replica
    that the handshake names."""
    import websockets

    from test_server import pace

    out: dict = {"finals": []}
    async with websockets.connect(f"ws://127.0.0.1:{port}/{query}", open_timeout=TIMEOUT_S) as ws:
        assert ws.response is not None
        out["replica"] = ws.response.headers.get(REPLICA_HEADER)
        out["local_port"] = ws.local_address[1]
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        t0 = time.monotonic()
        for i in range(0, len(data), 3200):
            await ws.send(data[i:i + 3200])
            reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
            if "text" in reply:
                out["finals"].append(reply)
            await pace(t0, (i + 3200) / 32000, True)
        await ws.send('{"eof" : 1}')
        out["finals"].append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S)))
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
        out["close"] = ws.close_code
    out["text"] = " ".join(m["text"] for m in out["finals"] if m["text"])
    return out


async def refused_without_token(port: int) -> int | None:
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT_S) as ws:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
        return ws.close_code


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_two_replicas_serve_two_concurrent_vosk_clients_each_on_one_replica(ray_cluster, tmp_path):
    pytest.importorskip("torch")
    from streamer.model.loading import load_model
    from test_server import alone, clip, clip_names, pcm16

    from desktop_fixtures import demo_model_or_skip

    demo_model_or_skip()
    address, env, _ = ray_cluster
    port = free_port()
    # --max-sessions 1: each replica takes one connection at a time, so two at once must go to both replicas.
    server = ServeProcess(["--ray", "--ray-address", address, "--model", "demo", "--websocket", f"ws://127.0.0.1:{port}",
                           "--min-replicas", "2", "--max-replicas", "2", "--replica-cpus", "0.5", "--max-sessions", "1"],
                          {**env, "STREAMER_SERVER_TOKEN": "Zq9-xyzzy"}, tmp_path)
    try:
        line = server.wait_for_line("streamer: serving", 300)
        assert f"ws://127.0.0.1:{port}" in line and "2-2 replicas" in line and "token required" in line
        demo = load_model("demo")
        clips = [clip(n)[0] for n in clip_names()[:2]]
        want = [alone(demo, a) for a in clips]
        assert all(want) and want[0] != want[1]

        async def both():
            return await asyncio.gather(*(vosk_client(port, pcm16(a), "?token=Zq9-xyzzy") for a in clips))

        results = asyncio.run(asyncio.wait_for(both(), 180))
        assert [r["text"] for r in results] == want  # each its own clip, as the same core alone decodes it
        assert all(r["close"] == 1000 for r in results)
        replicas = [r["replica"] for r in results]
        assert all(replicas) and replicas[0] != replicas[1], replicas

        # The replicas' logs (forwarded to the driver's stderr, prefixed with the replica's pid): each
        # connection was opened and closed on one and the same replica.
        def log_of(local_port: int) -> list[str]:
            return re.findall(rf"pid=(\d+)\).*websocket \('127\.0\.0\.1', {local_port}\): (?:connected|closing)",
                              server.text())

        for r in results:
            wait_for(lambda r=r: len(log_of(r["local_port"])) == 2, "the replica's log of a connection", 30)
            assert len(set(log_of(r["local_port"]))) == 1, server.text()
        assert log_of(results[0]["local_port"])[0] != log_of(results[1]["local_port"])[0]

        assert asyncio.run(asyncio.wait_for(refused_without_token(port), 60)) == 1008  # the token reached the replicas

        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(120)
        server.reader.join(10)
        assert server.proc.returncode == 0, server.text()
        assert "streamer: stopping the server" in server.text()
        wait_for(lambda: port_is_closed(port), "Serve's proxy to stop listening", 60)
        assert "Zq9-xyzzy" not in server.text() and want[0] not in server.text()  # no secrets, no transcripts
    finally:
        server.kill()


@pytest.mark.slow
def test_a_model_that_does_not_load_on_the_replicas_is_one_line_and_leaves_nothing_deployed(ray_cluster, tmp_path):
    address, env, _ = ray_cluster
    port = free_port()
    server = ServeProcess(["--ray", "--ray-address", address, "--model", str(tmp_path / "no-such-model"), "--websocket",
                           f"ws://127.0.0.1:{port}", "--replica-cpus", "0.5"], env, tmp_path)
    try:
        server.proc.wait(240)
        server.reader.join(10)
        last = server.text().strip().splitlines()[-1]
        assert server.proc.returncode == 2, server.text()
        assert last.startswith("streamer: error: the Ray Serve replicas did not start: model folder not found:"), last
        assert port_is_closed(port)  # the application and Serve's proxy are gone
    finally:
        server.kill()


@pytest.mark.slow
def test_sessions_scale_the_replicas_out_and_held_connections_stay_put(ray_cluster, tmp_path):
    """--target-sessions 1 with one replica and two open sessions: Serve adds the second replica (after its
    30 s upscale delay); new connections then reach it, the two held ones stay where they are."""
    import websockets

    address, env, _ = ray_cluster
    port = free_port()
    server = ServeProcess(["--ray", "--ray-address", address, "--model", "demo", "--websocket", f"ws://127.0.0.1:{port}",
                           "--min-replicas", "1", "--max-replicas", "2", "--target-sessions", "1", "--max-sessions", "4",
                           "--replica-cpus", "0.5"], env, tmp_path)
    uri = f"ws://127.0.0.1:{port}/"

    async def go():
        stop = asyncio.Event()

        async def hold():
            async with websockets.connect(uri, open_timeout=TIMEOUT_S) as ws:
                replica = ws.response.headers.get(REPLICA_HEADER)
                await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
                while not stop.is_set():  # silence at real-time pace
                    await ws.send(bytes(3200))
                    await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                    await asyncio.sleep(0.1)
                await ws.send('{"eof" : 1}')
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                return replica

        async def probe():
            async with websockets.connect(uri, open_timeout=TIMEOUT_S) as ws:
                return ws.response.headers.get(REPLICA_HEADER)

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        seen: set = set()
        deadline = time.monotonic() + 150
        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(2)
            seen.add(await probe())
        stop.set()
        return await asyncio.gather(*holders), seen

    try:
        server.wait_for_line("streamer: serving", 300)
        held, seen = asyncio.run(asyncio.wait_for(go(), 240))
        assert len(seen) == 2 and None not in seen, seen  # a second replica came up and took connections
        assert held[0] == held[1] and held[0] in seen  # both sessions started on the one replica there was
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(120)
        assert server.proc.returncode == 0, server.text()
    finally:
        server.kill()
