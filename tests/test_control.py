"""The control socket (streamer.app.control) and `streamer ctl` (streamer.cli.ctl), in process: a real Unix
socket in a private runtime dir, driving a recording target (the live flows are in test_control_live.py)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from streamer.app.control import ControlError, ControlServer, ControlStatus, NotRunning, request, runtime_dir, socket_path
from streamer.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


class Target:
    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resume(self) -> None:
        self.calls.append("resume")
        self.paused = False

    def request_stop(self) -> None:
        self.calls.append("stop")
        self.stopped = True


@pytest.fixture
def env():
    folder = tempfile.mkdtemp(prefix="srt-", dir="/tmp")
    return {"XDG_RUNTIME_DIR": folder}


def server(target: Target, env: dict, name: str = "default", say=None) -> ControlServer:
    def status() -> ControlStatus:
        return ControlStatus(name, os.getpid(), "paused" if target.paused else "listening", "m", ("mic",), 1.5, 2, 3,
                             4.0)

    return ControlServer(target, status, name=name, say=say or (lambda m: None), env=env).open()


def test_commands_round_trip(env):
    target = Target()
    with server(target, env) as srv:
        path = socket_path(env=env)
        assert path == Path(env["XDG_RUNTIME_DIR"]) / "streamer" / "default.sock"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert request("pause", env=env)["status"]["state"] == "paused"
        assert request("toggle", env=env)["status"]["state"] == "listening"
        assert request("toggle", env=env)["status"]["state"] == "paused"
        answer = request("status", env=env)
        assert answer["ok"] and answer["status"] == {"name": "default", "pid": os.getpid(), "state": "paused",
                                                     "model": "m", "sources": ["mic"], "uptime_s": 1.5,
                                                     "utterances": 2, "dropped_samples": 3, "processed_s": 4.0}
        request("resume", env=env)
        request("quit", env=env)
        assert target.calls == ["pause", "resume", "pause", "resume", "stop"]
        assert srv.bad_messages == 0
    assert not path.exists()  # closing removes the socket


def test_several_requests_on_one_connection(env):
    target = Target()
    with server(target, env):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(socket_path(env=env)))
            s.sendall(b'{"command": "pause"}\n{"command": "status"}\n')
            reader = s.makefile("rb")
            answers = [json.loads(reader.readline()) for _ in range(2)]
    assert [a["command"] for a in answers] == ["pause", "status"]
    assert answers[1]["status"]["state"] == "paused"


def test_a_second_instance_with_the_same_name_refuses_and_another_name_works(env):
    with server(Target(), env):
        with pytest.raises(ControlError, match="another streamer is already running as the default instance"):
            server(Target(), env)
        with server(Target(), env, name="second"):
            assert request("status", name="second", env=env)["status"]["name"] == "second"
            with pytest.raises(ControlError, match="--name second"):
                server(Target(), env, name="second")
        assert request("status", env=env)["ok"]  # the first one was not disturbed


def test_a_stale_socket_of_a_killed_instance_is_replaced(env):
    path = socket_path(env=env)
    path.parent.mkdir(mode=0o700, parents=True)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # a socket file with nobody listening: what a killed instance leaves
    os.chmod(path, 0o600)
    dead.close()
    assert path.exists()
    with pytest.raises(NotRunning, match="stale control socket") as err:
        request("status", env=env)
    assert err.value.exit_code == 1
    with server(Target(), env) as srv:
        assert srv.replaced_stale
        assert request("status", env=env)["ok"]


def test_garbage_is_ignored_with_a_line_and_the_instance_keeps_serving(env):
    said: list[str] = []
    target = Target()
    with server(target, env, say=said.append) as srv:
        garbage = [b"hello\n", b"\xff\xfe\n", b'{"command": "explode"}\n', b"[1, 2]\n", b"x" * 5000 + b"\n"]
        for message in garbage:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(socket_path(env=env)))
                s.sendall(message)
                answer = json.loads(s.makefile("rb").readline())
                assert answer["ok"] is False and "ignored" in answer["error"]
        assert srv.bad_messages == len(garbage)
        assert len(said) == len(garbage) and all(m.startswith("streamer: warning: control socket: ignored") for m in said)
        assert all("\n" not in m for m in said)
        assert request("pause", env=env)["ok"] and target.calls == ["pause"]


def test_no_instance_is_one_line_and_exit_1(capsys, monkeypatch, env):
    monkeypatch.setenv("XDG_RUNTIME_DIR", env["XDG_RUNTIME_DIR"])
    assert main(["ctl", "status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamer: error: no streamer is running"), err


def test_ctl_prints_status_and_json(capsys, monkeypatch, env):
    monkeypatch.setenv("XDG_RUNTIME_DIR", env["XDG_RUNTIME_DIR"])
    with server(Target(), env, name="desk"):
        assert main(["ctl", "pause", "--name", "desk"]) == 0
        assert capsys.readouterr().out.strip() == "streamer desk: paused"
        assert main(["ctl", "status", "--name", "desk"]) == 0
        out = capsys.readouterr().out
        assert "state:           paused" in out and "utterances:      2" in out and "source:" in out
        assert main(["ctl", "status", "--json", "--name", "desk"]) == 0
        assert json.loads(capsys.readouterr().out)["status"]["dropped_samples"] == 3
        assert main(["ctl", "status", "--debug", "--name", "desk"]) == 0  # --debug is taken, not refused
        capsys.readouterr()
    assert main(["ctl", "status", "--name", "../x"]) == 2
    assert "bad --name" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_a_socket_of_another_user_is_refused(env):
    path = socket_path(env=env)
    path.parent.mkdir(mode=0o700, parents=True)
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen(1)
    try:
        os.chown(path, 65534, 65534)  # nobody's
        with pytest.raises(ControlError, match="belongs to user id 65534"):
            request("status", env=env)
    finally:
        other.close()


def test_the_server_refuses_a_peer_of_another_user(env):
    said: list[str] = []
    with server(Target(), env, say=said.append) as srv:
        a, b = socket.socketpair()
        with a, b:
            import streamer.app.control as control

            real = control.peer_uid
            control.peer_uid = lambda conn: os.getuid() + 1  # as SO_PEERCRED would report another user
            try:
                srv._slots.acquire()
                thread = threading.Thread(target=srv._connection, args=(a,))
                thread.start()
                thread.join(5)
            finally:
                control.peer_uid = real
            assert b.recv(100) == b""  # closed without an answer
        assert said and "refused a connection from user id" in said[0]


def test_commands_before_the_model_has_loaded_are_kept(env):
    srv = ControlServer(name="early", say=lambda m: None, env=env).open()
    try:
        assert request("status", name="early", env=env)["status"]["state"] == "starting"
        assert request("pause", name="early", env=env)["status"]["state"] == "starting (then paused)"
        assert not request("toggle", name="early", env=env)["ok"]
        target = Target()
        srv.attach(target, lambda: ControlStatus("early", 1, "x", "m", (), 0.0, 0, 0, 0.0))
        assert target.calls == ["pause"]
    finally:
        srv.close()


def test_runtime_dir_prefers_xdg_and_falls_back_to_a_private_temp_folder(tmp_path):
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path
    fallback = runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "missing")})
    assert fallback.is_dir() or fallback.name == f"streamer-{os.getuid()}"


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["--list-devices"], ["ctl", "status"], ["ctl", "--help"]])
def test_fast_commands_import_neither_torch_nor_transformers(argv, tmp_path):
    """`streamer --help`, `--list-devices` and `streamer ctl` start fast: the heavy libraries stay out."""
    probe = ("import runpy, sys\nsys.argv = ['streamer', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('streamer', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)\n"
             "print('HEAVY', ','.join(heavy), file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True, timeout=60)
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY")][-1].split()[1:]
    loaded = heavy[0].split(",") if heavy else []
    assert "torch" not in loaded and "transformers" not in loaded, proc.stderr
    if argv[0] == "ctl":
        assert loaded == [], "streamer ctl imports nothing heavy, not even numpy"


def test_an_unusable_runtime_dir_is_one_line(tmp_path):
    (tmp_path / "streamer").write_text("a file where the control folder goes")
    with pytest.raises(ControlError, match="is not a folder of yours"):
        ControlServer(Target(), name="x", env={"XDG_RUNTIME_DIR": str(tmp_path)}).open()
    (tmp_path / "streamer").unlink()
    (tmp_path / "streamer").mkdir(mode=0o755)
    with pytest.raises(ControlError, match="open to other users"):
        ControlServer(Target(), name="x", env={"XDG_RUNTIME_DIR": str(tmp_path)}).open()


def test_a_default_run_without_a_usable_socket_warns_and_goes_on(tmp_path, capsys, monkeypatch):
    from streamer.app.options import ControlOptions, RunOptions
    from streamer.app.run import open_control

    blocker = tmp_path / "rt"
    blocker.mkdir()
    (blocker / "streamer").write_text("in the way")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(blocker))
    assert open_control(RunOptions(control=ControlOptions(name="default")), print) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamer: warning: no control socket"), err
    with pytest.raises(ControlError):
        open_control(RunOptions(control=ControlOptions(name="named")), print)


def test_the_lazy_package_exports_are_the_functions():
    """`streamer.cli.main` is the function even after the submodule of the same name was imported."""
    import importlib

    importlib.import_module("streamer.cli.main")
    import streamer
    import streamer.cli as cli

    assert callable(cli.main) and callable(cli.build_parser)
    assert callable(streamer.load_model) and isinstance(streamer.Recognizer, type)
