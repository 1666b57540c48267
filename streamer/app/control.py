"""Control of a running instance from outside (`streamer ctl pause|resume|toggle|status|quit`): a Unix socket
per instance name, served by one thread at the edge of the application.

Where: `<runtime dir>/streamer/<name>.sock`, the runtime dir being $XDG_RUNTIME_DIR, else platformdirs'
user runtime dir (/run/user/UID on Linux, ~/Library/Caches/TemporaryItems on macOS) when it exists, else
`<temp dir>/streamer-UID` (created mode 0700 and refused unless it is yours and private). The `streamer`
folder is created mode 0700, the socket is mode 0600, and the server answers only peers of its own user
(SO_PEERCRED where the system has it). One instance per name: `<name>.lock` is held (flock) while an
instance runs, so a second one with the same name refuses to start; a socket file left by a killed
instance (its lock is free, a connect to it is refused) is replaced.

Protocol: line-delimited JSON over the stream socket, any number of requests per connection, each answered
in order. Request: {"command": "pause" | "resume" | "toggle" | "status" | "quit"}. Answer:
{"ok": true, "command": ..., "status": {state, model, sources, uptime_s, utterances, dropped_samples,
processed_s, name, pid}} or {"ok": false, "error": "..."}. A message that is not such a request (bad JSON,
an unknown command, a line over MAX_MESSAGE_BYTES) is answered with an error and told in one log line; the
instance keeps running.

Threads: the accept thread and one short-lived thread per connection call the target's pause / resume /
request_stop (Session's, safe from any thread) and the status function.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from streamer.errors import StreamerError

if TYPE_CHECKING:  # the client (streamer ctl) imports this module: nothing heavy at import time
    from streamer.core.events import Event

#: The instance name when --name is not given: one instance per user.
DEFAULT_NAME = "default"
COMMANDS = ("pause", "resume", "toggle", "status", "quit")
#: A request line longer than this is garbage (a request is a few dozen bytes).
MAX_MESSAGE_BYTES = 4096
#: A connection that sends nothing for this long is closed (a stuck client must not hold a thread).
CONNECTION_IDLE_S = 10.0
#: At most this many connections served at once; more are answered "busy" and closed.
MAX_CONNECTIONS = 8
#: How often the accept loop looks at its stop flag.
ACCEPT_POLL_S = 0.2
#: sun_path holds 108 bytes on Linux, 104 on macOS; the path must fit with its terminating NUL.
MAX_SOCKET_PATH_BYTES = 103
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class ControlError(StreamerError):
    """The control socket cannot be used: another instance has the name, a bad name, a refused socket."""


class NameInUse(ControlError):
    """Another instance runs with this name: the second one refuses to start."""


class NotRunning(ControlError):
    """No instance answers on that name (`streamer ctl` exits 1)."""

    exit_code = 1


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ControlError(f"bad --name {name!r}", "use up to 64 letters, digits, '_', '-' or '.', not starting "
                           "with '.' or '-'")
    return name


def _fallback_dir() -> Path:
    if not hasattr(os, "getuid"):  # Windows: no uid (and no Unix sockets: open() says so in one line)
        import getpass

        return Path(tempfile.gettempdir()) / f"streamer-{getpass.getuser()}"
    uid = os.getuid()
    return Path(tempfile.gettempdir()) / f"streamer-{uid}"


def runtime_dir(env: dict[str, str] | None = None) -> Path:
    """The user's runtime folder (see the module docstring); not created here."""
    env = dict(os.environ) if env is None else env
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg)
    try:
        from platformdirs import user_runtime_dir

        found = Path(user_runtime_dir())
        if found.is_dir() and os.access(found, os.W_OK | os.X_OK):
            return found
    except ImportError:  # platformdirs is a dependency; the fallback still works without it
        pass
    return _fallback_dir()


def control_dir(env: dict[str, str] | None = None) -> Path:
    return runtime_dir(env) / "streamer"


def socket_path(name: str = DEFAULT_NAME, env: dict[str, str] | None = None) -> Path:
    return control_dir(env) / f"{check_name(name)}.sock"


def _private_dir(folder: Path) -> None:
    """Create `folder` (and the temp-dir fallback above it) mode 0700; refuse one that is not ours or is
    open to others (in a shared temp folder someone else could have made it first)."""
    for d in (folder.parent, folder) if folder.parent == _fallback_dir() else (folder,):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        st = d.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise ControlError(f"the control folder {d} is not a folder of yours", "remove it, or set XDG_RUNTIME_DIR")
        if st.st_mode & 0o077:
            raise ControlError(f"the control folder {d} is open to other users (mode {stat.S_IMODE(st.st_mode):o})",
                               f"chmod 700 {d}")


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process at the other end (Linux SO_PEERCRED, BSD/macOS getpeereid); None if unknown."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    getpeereid = getattr(conn, "getpeereid", None)
    return getpeereid()[0] if getpeereid else None


@dataclass(frozen=True)
class ControlStatus:
    """What `streamer ctl status` shows."""

    name: str
    pid: int
    state: str  # "listening" | "paused" | "stopping"
    model: str
    sources: tuple[str, ...]
    uptime_s: float
    utterances: int
    dropped_samples: int
    processed_s: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = list(self.sources)
        return d


class ControlTarget(Protocol):
    """What the socket drives (a streamer.app.Session)."""

    @property
    def paused(self) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def request_stop(self) -> None: ...


class ControlServer:
    """The socket of one instance. `open()` claims the name (ControlError when another instance has it) and
    starts serving; `close()` stops, removes the socket and frees the name. Idempotent, usable with `with`."""

    def __init__(self, target: ControlTarget | None = None, status: Callable[[], ControlStatus] | None = None,
                 name: str = DEFAULT_NAME, say: Callable[[str], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = check_name(name)
        self.target = target
        self.status = status
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.folder = control_dir(env)
        self.path = self.folder / f"{self.name}.sock"
        self.lock_path = self.folder / f"{self.name}.lock"
        self.replaced_stale = False
        self.bad_messages = 0
        #: Finals so far (handle_event counts them when the server is a session handler).
        self.utterances = 0
        self.started = time.monotonic()
        self._attach_lock = threading.Lock()
        self._pending_pause: bool | None = None  # asked for before attach()
        self._pending_quit = False
        self._sock: socket.socket | None = None
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def open(self) -> ControlServer:
        if self._sock is not None:
            return self
        if not hasattr(socket, "AF_UNIX"):
            raise ControlError("streamer ctl needs Unix domain sockets, which this system lacks")
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH_BYTES:
            raise ControlError(f"the control socket path {self.path} is too long for a Unix socket",
                               "set XDG_RUNTIME_DIR to a shorter folder")
        try:
            _private_dir(self.folder)
            self._claim_name()
        except OSError as exc:
            raise ControlError(f"cannot create the control socket in {self.folder}: {exc.strerror or exc}",
                               "set XDG_RUNTIME_DIR to a folder of yours, or run with --no-control") from exc
        try:
            self._replace_stale()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(str(self.path))
                os.chmod(self.path, 0o600)  # the folder is 0700 already: nobody else could connect meanwhile
                sock.listen(MAX_CONNECTIONS)
                sock.settimeout(ACCEPT_POLL_S)
            except OSError as exc:
                sock.close()
                raise ControlError(f"cannot open the control socket {self.path}: {exc.strerror}") from exc
            st = self.path.stat()
            self._inode = (st.st_dev, st.st_ino)
            self._sock = sock
        except BaseException:
            self._release_name()
            raise
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * ACCEPT_POLL_S + 1)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):  # only our own socket file: never another instance's
                st = self.path.stat()
                if (st.st_dev, st.st_ino) == self._inode:
                    self.path.unlink()
        self._release_name()

    def __enter__(self) -> ControlServer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _claim_name(self) -> None:
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                flag = "" if self.name == DEFAULT_NAME else f" --name {self.name}"
                raise NameInUse(f"another streamer is already running as{flag or ' the default instance'} "
                                   f"(control socket {self.path})",
                                   f"stop it with: streamer ctl quit{flag}; or start this one with another --name")
            raise
        self._lock_fd = fd

    def _release_name(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock; the lock file stays (removing it would race)
            self._lock_fd = None

    def _replace_stale(self) -> None:
        """A socket file without a live instance behind it (we hold the name's lock): left by a killed
        instance. Checked by connecting, then removed so the bind below can take its place."""
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} is in the way of the control socket and is not a socket", "remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()
            self.replaced_stale = True
            return
        finally:
            probe.close()
        raise ControlError(f"another process answers on {self.path}", "stop it with streamer ctl quit, or use --name")

    # -- serving (accept thread and connection threads) -----------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(ACCEPT_POLL_S)
                continue
            if not self._slots.acquire(blocking=False):
                self._reply(conn, {"ok": False, "error": "busy: too many control connections"})
                conn.close()
                continue
            threading.Thread(target=self._connection, args=(conn,), name="control-connection", daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        try:
            with conn:
                uid = peer_uid(conn)
                if uid is not None and uid != os.getuid():
                    self._bad(f"refused a connection from user id {uid} (only user id {os.getuid()} may control "
                              "this instance)")
                    return
                conn.settimeout(CONNECTION_IDLE_S)
                buf = b""
                while not self._stop.is_set():
                    try:
                        data = conn.recv(MAX_MESSAGE_BYTES)
                    except (TimeoutError, OSError):
                        return
                    if not data:
                        return
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip() and not self._reply(conn, self.handle_line(line)):
                            return
                    if len(buf) > MAX_MESSAGE_BYTES:
                        self._reply(conn, self._bad(f"a message longer than {MAX_MESSAGE_BYTES} bytes"))
                        return
        finally:
            self._slots.release()

    @staticmethod
    def _reply(conn: socket.socket, answer: dict) -> bool:
        try:
            conn.sendall(json.dumps(answer).encode("utf-8") + b"\n")
            return True
        except OSError:
            return False

    def _bad(self, what: str) -> dict:
        self.bad_messages += 1
        self.say(f"streamer: warning: control socket: ignored {what}")
        return {"ok": False, "error": f"ignored {what}"}

    def handle_line(self, line: bytes) -> dict:
        """One request line -> its answer (pure apart from acting on the target)."""
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._bad(f"a message that is not JSON ({line[:40]!r})")
        command = request.get("command") if isinstance(request, dict) else None
        if command not in COMMANDS:
            shown = json.dumps(request)[:60]
            return self._bad(f"a message that is not a command ({shown}; commands: {', '.join(COMMANDS)})")
        return self.handle(command)

    def attach(self, target: ControlTarget, status: Callable[[], ControlStatus]) -> None:
        """What the socket drives, once it exists: the name is claimed before the model loads (so a second
        instance refuses at once), the session comes later."""
        with self._attach_lock:
            if self._pending_pause is True:
                target.pause()
            elif self._pending_pause is False:
                target.resume()
            if self._pending_quit:
                target.request_stop()
            self.status = status
            self.target = target

    def handle_event(self, event: Event) -> None:
        """A session handler: counts the finals for `status` (worker thread)."""
        from streamer.core.events import FinalEvent

        if isinstance(event, FinalEvent):
            self.utterances += 1

    def handle(self, command: str) -> dict:
        with self._attach_lock:
            target, status = self.target, self.status
            if target is None or status is None:  # the model is loading: remembered, done once it has loaded
                if command == "toggle":
                    return {"ok": False, "error": "still starting (loading the model): toggle once it is ready, "
                                                  "or use pause / resume"}
                if command in ("pause", "resume"):
                    self._pending_pause = command == "pause"
                self._pending_quit |= command == "quit"
                return {"ok": True, "command": command, "status": self.starting_status().to_dict()}
        if command == "pause":
            target.pause()
        elif command == "resume":
            target.resume()
        elif command == "toggle":
            if target.paused:
                target.resume()
            else:
                target.pause()
        elif command == "quit":
            target.request_stop()
        return {"ok": True, "command": command, "status": status().to_dict()}

    def starting_status(self) -> ControlStatus:
        then = " (then stopping)" if self._pending_quit else {True: " (then paused)", False: " (then listening)",
                                                               None: ""}[self._pending_pause]
        return ControlStatus(self.name, os.getpid(), f"starting{then}", "(loading)", (),
                             time.monotonic() - self.started, 0, 0, 0.0)


def request(command: str, name: str = DEFAULT_NAME, timeout_s: float = 5.0,
            env: dict[str, str] | None = None) -> dict:
    """The client side (`streamer ctl`): send one command to the instance `name` and return its answer.
    NotRunning when no instance answers; ControlError when the socket is refused (not ours)."""
    if command not in COMMANDS:
        raise ControlError(f"unknown control command {command!r}", f"use one of {', '.join(COMMANDS)}")
    path = socket_path(name, env)
    flag = "" if name == DEFAULT_NAME else f" --name {name}"
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise NotRunning(f"no streamer is running{' as ' + name if flag else ''} (no control socket at {path})",
                         f"start one, e.g. streamer --start-paused{flag}") from None
    except PermissionError:
        raise ControlError(f"the control socket {path} cannot be read (permission denied)",
                           "it is another user's; run streamer ctl as the user that runs streamer") from None
    if st.st_uid != os.getuid():
        raise ControlError(f"refusing the control socket {path}: it belongs to user id {st.st_uid}, not to you "
                           f"({os.getuid()})", "run streamer ctl as the user that runs streamer")
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} is not a socket", "remove it; the next streamer start creates the socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise NotRunning(f"no streamer is running{' as ' + name if flag else ''} (a stale control socket is "
                             f"left at {path} by an instance that was killed; the next start replaces it)",
                             f"start one, e.g. streamer --start-paused{flag}") from None
        uid = peer_uid(sock)
        if uid is not None and uid != os.getuid():
            raise ControlError(f"refusing the control socket {path}: it is served by user id {uid}, not by you")
        sock.sendall(json.dumps({"command": command}).encode("utf-8") + b"\n")
        buf = b""
        while b"\n" not in buf:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
    except TimeoutError:
        raise NotRunning(f"the streamer at {path} did not answer within {timeout_s:g} s",
                         "it may be stopping or stuck; try again") from None
    except OSError as exc:
        raise NotRunning(f"cannot talk to the streamer at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if b"\n" not in buf:
        raise NotRunning(f"the streamer at {path} closed the connection without an answer", "it may be stopping")
    answer = json.loads(buf.split(b"\n", 1)[0].decode("utf-8"))
    if not isinstance(answer, dict):
        raise ControlError(f"the streamer at {path} gave an answer that is not a JSON object")
    return answer
