"""Voice commands from a TOML file (--commands FILE): phrases -> actions, matched on finals only.

    threshold = 90                 # optional: minimum fuzzy score 0..100 for every command
    confirm_phrase = "confirm"     # optional: what to say to run a command marked confirm = true
    confirm_timeout_s = 10         # optional: how long a confirmation may take (audio seconds)

    [commands.open-editor]
    phrases = ["open the editor", "start the editor"]   # or: phrase = "open the editor"
    run = ["gedit", "--new-window"]                     # a program and its fixed arguments
    confirm = false                                     # optional
    threshold = 90                                      # optional, this command only

    [commands.save]
    phrase = "save the file"
    keys = ["ctrl+s"]              # key chords pressed in the focused window

    [commands.sign]
    phrase = "insert signature"
    insert = "Best regards,\\nAda"   # text added where dictation goes (typed with --commands-only)

Safety: a `run` program is resolved to an absolute path when the file is loaded (on PATH, or relative to
the commands file) and started with subprocess.Popen(argv, shell=False) from the list in the file only; text
from speech never becomes part of an argument, a path or a command line. Commands marked `confirm = true` wait
for the confirmation phrase; anything else said cancels them, and so does silence longer than
confirm_timeout_s.

Trust (`distrust`): a file that can make streamer run programs is obeyed only when no one but you (or root)
could have written it, as ssh's StrictModes has it: the file and every folder above it up to / (where its
name lies and where symbolic links lead) are owned by you or root and writable by neither group nor others
(a group whose only member is the owner, a user private group, counts as the owner); a sticky folder such as
/tmp may be writable by all, since only an entry's owner can replace the entry. The
same holds for every `run` program and its folders, so a program placed earlier on PATH by someone else is
refused rather than run.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from streamer.errors import ConfigError, SinkError, require
from streamer.sinks.dictation import normalize_phrase
from streamer.sinks.typing import parse_chord

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Minimum rapidfuzz ratio (0..100) for a match. 90 accepts one wrong letter in a 15-letter phrase
#: ('open the editer' 93) and rejects a different last word, also misheard: 'open the door' scores 86
#: against 'open the editor' and the demo model's 'open the dor' 89 (88 ran the editor on it).
DEFAULT_THRESHOLD = 90.0
#: What to say to run a command marked confirm = true.
DEFAULT_CONFIRM_PHRASE = "confirm"
#: A confirmation later than this (audio seconds after the command ended) does not count.
DEFAULT_CONFIRM_TIMEOUT_S = 10.0

ACTIONS = ("insert", "keys", "run")
_TOP_KEYS = {"threshold", "confirm_phrase", "confirm_timeout_s", "commands"}
_COMMAND_KEYS = {"phrase", "phrases", "confirm", "threshold", *ACTIONS}


@dataclass(frozen=True)
class Action:
    """Exactly one of: text to insert, key chords to press, a program with fixed arguments to run."""

    kind: str
    text: str = ""
    keys: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "insert":
            return f"insert {len(self.text)} characters"
        if self.kind == "keys":
            return "press " + " ".join(self.keys)
        return "run " + " ".join(self.argv)


@dataclass(frozen=True)
class Command:
    name: str
    phrases: tuple[str, ...]
    action: Action
    confirm: bool = False
    threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class CommandSet:
    path: Path
    commands: tuple[Command, ...]
    confirm_phrase: str = DEFAULT_CONFIRM_PHRASE
    confirm_timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S
    threshold: float = DEFAULT_THRESHOLD

    @property
    def programs(self) -> tuple[str, ...]:
        """The absolute paths of the programs `run` actions start, each once."""
        return tuple(dict.fromkeys(c.action.argv[0] for c in self.commands if c.action.kind == "run"))

    def describe(self) -> list[str]:
        """One line per command: its name, phrases and what it does (programs with their absolute paths)."""
        out = []
        for c in self.commands:
            a = c.action
            does = f"runs {shlex.join(a.argv)}" if a.kind == "run" else a.describe().replace("insert ", "inserts ", 1)
            if a.kind == "keys":
                does = "presses " + " ".join(a.keys)
            phrases = " / ".join(repr(p) for p in c.phrases)
            out.append(f"commands.{c.name}: {phrases} {does}" + (" after confirmation" if c.confirm else ""))
        return out

    @property
    def phrases(self) -> tuple[str, ...]:
        """Every phrase, the confirmation phrase included (the hotwords for beam search)."""
        out = [p for c in self.commands for p in c.phrases]
        if any(c.confirm for c in self.commands):
            out.append(self.confirm_phrase)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Match:
    command: Command
    phrase: str
    heard: str
    score: float

    @property
    def accepted(self) -> bool:
        return self.score >= self.command.threshold


# -- loading ---------------------------------------------------------------------------------------------
def _fail(path: Path, key: str, problem: str) -> ConfigError:
    where = f"{path}: {key}" if key else str(path)
    return ConfigError(f"commands file {where}: {problem}", "see the example at the top of streamer/sinks/commands.py")


def _score(path: Path, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise _fail(path, key, f"must be a number from 0 to 100, not {value!r}")
    return float(value)


def _string_list(path: Path, key: str, value, allow_single: bool = True) -> tuple[str, ...]:
    if allow_single and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(path, key, "must be a non-empty list of strings")
    return tuple(value)


def _phrase(path: Path, key: str, text: str) -> str:
    phrase = normalize_phrase(text)
    if not phrase:
        raise _fail(path, key, f"phrase {text!r} has no words")
    return phrase


@dataclass(frozen=True)
class Distrust:
    """Why a file may not be obeyed: `problem` completes "..., but <problem>"; `fix` is what to do."""

    problem: str
    fix: str


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _ancestors(p: Path) -> list[Path]:
    return [p, *p.parents]


def private_group(gid: int, owner: int) -> bool:
    """Whether group `gid` has `owner` as its only member (a user private group, as with umask 002 on Debian /
    Ubuntu): then group-writable is writable by the owner alone. The rule of Debian's OpenSSH StrictModes:
    every account whose primary group it is, and every listed member, is the owner."""
    try:
        group = grp.getgrgid(gid)
        owner_name = pwd.getpwuid(owner).pw_name
        primary = [pw.pw_uid for pw in pwd.getpwall() if pw.pw_gid == gid]
    except (KeyError, OSError):
        return False
    if any(u != owner for u in primary) or any(m != owner_name for m in group.gr_mem):
        return False
    return bool(primary or group.gr_mem)


def _entry_distrust(p: Path, st: os.stat_result, uid: int, label: str, folder: bool) -> Distrust | None:
    if st.st_uid not in (uid, 0):
        fix = "move the file into a folder of your own" if folder else "make a copy of your own and use that"
        return Distrust(f"{label} is owned by {_owner(st.st_uid)}, not by you", fix)
    if folder and st.st_mode & stat.S_ISVTX:
        return None  # only an entry's owner may replace it: the entries below are checked themselves
    if st.st_mode & stat.S_IWOTH:
        return Distrust(f"{label} is writable by every user", f"chmod go-w {p}")
    if st.st_mode & stat.S_IWGRP and not private_group(st.st_gid, st.st_uid):
        return Distrust(f"{label} is writable by its group", f"chmod go-w {p}")
    return None


def distrust(path: str | Path, uid: int | None = None, file_stat: os.stat_result | None = None,
             noun: str = "the file") -> Distrust | None:
    """Why the file at `path` (one that can make streamer run programs) must not be obeyed, or None when only
    `uid` (default: this process's user) or root could have written it (see the module docstring).
    `file_stat`: the file's own status from the descriptor it was read through. OSError propagates."""
    if os.name != "posix":
        return None
    uid = os.getuid() if uid is None else uid
    given = Path(os.path.abspath(Path(path).expanduser()))
    real = Path(os.path.realpath(given))
    issue = _entry_distrust(real, file_stat or os.stat(real), uid, noun, folder=False)
    if issue is not None:
        return issue
    if given != real and given.is_symlink():
        link = os.lstat(given)
        if link.st_uid not in (uid, 0):
            return Distrust(f"the symbolic link {given} to it is owned by {_owner(link.st_uid)}, not by you",
                            "use the file's own path")
    # Every folder on the path as given (where symbolic links lie) and on the path they lead to.
    for folder in dict.fromkeys([*_ancestors(given.parent), *_ancestors(real.parent)]):
        issue = _entry_distrust(folder, os.stat(folder), uid, f"the folder {folder} above it", folder=True)
        if issue is not None:
            return issue
    return None


def _resolve_program(path: Path, key: str, program: str, which: Callable[[str], str | None]) -> str:
    if os.sep in program or (os.altsep and os.altsep in program):
        p = Path(program).expanduser()
        if not p.is_absolute():
            p = Path(os.path.normpath(path.parent.absolute() / p))  # relative to the commands file, never the working folder
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise _fail(path, key, f"program {program!r} is not an executable file")
        found = str(p)
        shown = f"program {program!r}" + (f" ({found})" if found != program else "")
    else:
        hit = which(program)
        if not hit:
            raise _fail(path, key, f"program {program!r} is not on PATH")
        if not os.path.isabs(hit):
            raise _fail(path, key, f"program {program!r} was found as {hit} through a relative PATH entry, which "
                        "depends on the working folder (give the program's absolute path or fix PATH)")
        found = hit
        shown = f"program {program!r} (found on PATH as {found})"
    try:
        issue = distrust(found, noun="the program")
    except OSError as exc:
        raise _fail(path, key, f"cannot check {shown}: {exc.strerror}") from None
    if issue is not None:
        raise ConfigError(f"commands file {path}: {key}: {shown} could be replaced by someone else: {issue.problem}",
                          issue.fix)
    return found


def _read_trusted(path: Path) -> bytes:
    """The commands file's bytes, once it is known that only you (or root) could have written them."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"commands file {path} is not a regular file", "give the path of a TOML file")
            issue = distrust(path, file_stat=st)
            if issue is not None:
                raise ConfigError(f"commands file {path} can make streamer run programs, but {issue.problem}",
                                  issue.fix)
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"commands file {path} does not exist", "check the path given to --commands") from None
    except IsADirectoryError:
        raise ConfigError(f"commands file {path} is a folder", "give the path of a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read commands file {path}: {exc.strerror}") from exc


def load_commands(path: str | Path, which: Callable[[str], str | None] = shutil.which) -> CommandSet:
    """Read and validate a commands file. Every problem is one ConfigError naming the file and the key."""
    require("rapidfuzz.fuzz", "dictation", package="rapidfuzz")  # matching needs it: say so at start
    path = Path(path).expanduser()
    raw = _read_trusted(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"commands file {path} is not valid TOML: {exc}", "fix the line named") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(path, key, f"unknown setting (expected one of {', '.join(sorted(_TOP_KEYS))})")
    threshold = _score(path, "threshold", data.get("threshold", DEFAULT_THRESHOLD))
    confirm_phrase = data.get("confirm_phrase", DEFAULT_CONFIRM_PHRASE)
    if not isinstance(confirm_phrase, str):
        raise _fail(path, "confirm_phrase", "must be a string")
    confirm_phrase = _phrase(path, "confirm_phrase", confirm_phrase)
    timeout = data.get("confirm_timeout_s", DEFAULT_CONFIRM_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise _fail(path, "confirm_timeout_s", f"must be a positive number of seconds, not {timeout!r}")
    table = data.get("commands")
    if not isinstance(table, dict) or not table:
        raise _fail(path, "commands", "no commands: add at least one [commands.NAME] table")
    commands: list[Command] = []
    seen: dict[str, str] = {}
    for name, spec in table.items():
        key = f"commands.{name}"
        if not isinstance(spec, dict):
            raise _fail(path, key, "must be a table with a phrase and an action")
        for k in spec:
            if k not in _COMMAND_KEYS:
                raise _fail(path, f"{key}.{k}", f"unknown setting (expected one of {', '.join(sorted(_COMMAND_KEYS))})")
        if ("phrase" in spec) == ("phrases" in spec):
            raise _fail(path, key, "give either phrase or phrases")
        pkey = f"{key}.{'phrase' if 'phrase' in spec else 'phrases'}"
        phrases = tuple(_phrase(path, pkey, p) for p in _string_list(path, pkey, spec.get("phrase", spec.get("phrases"))))
        for p in phrases:
            if p in seen:
                raise _fail(path, pkey, f"phrase {p!r} is also used by commands.{seen[p]}")
            if p == confirm_phrase:
                raise _fail(path, pkey, f"phrase {p!r} is the confirmation phrase")
            seen[p] = name
        kinds = [k for k in ACTIONS if k in spec]
        if len(kinds) != 1:
            raise _fail(path, key, "give exactly one action: insert, keys or run")
        kind = kinds[0]
        akey = f"{key}.{kind}"
        if kind == "insert":
            if not isinstance(spec["insert"], str) or not spec["insert"]:
                raise _fail(path, akey, "must be a non-empty string")
            action = Action("insert", text=spec["insert"])
        elif kind == "keys":
            keys = _string_list(path, akey, spec["keys"])
            for chord in keys:
                try:
                    parse_chord(chord)
                except ValueError as exc:
                    raise _fail(path, akey, str(exc)) from None
            action = Action("keys", keys=keys)
        else:
            argv = _string_list(path, akey, spec["run"], allow_single=False)
            action = Action("run", argv=(_resolve_program(path, akey, argv[0], which), *argv[1:]))
        confirm = spec.get("confirm", False)
        if not isinstance(confirm, bool):
            raise _fail(path, f"{key}.confirm", "must be true or false")
        cmd_threshold = _score(path, f"{key}.threshold", spec.get("threshold", threshold))
        commands.append(Command(name, phrases, action, confirm, cmd_threshold))
    return CommandSet(path, tuple(commands), confirm_phrase, float(timeout), threshold)


# -- matching --------------------------------------------------------------------------------------------
def best_match(commands: CommandSet, heard_text: str) -> Match | None:
    """The best-scoring command for a final text (rapidfuzz ratio of the whole utterance against each
    phrase, 0..100), accepted or not; None for an empty utterance."""
    fuzz = require("rapidfuzz.fuzz", "dictation", package="rapidfuzz")
    heard = normalize_phrase(heard_text)
    if not heard:
        return None
    best: Match | None = None
    for cmd in commands.commands:
        for phrase in cmd.phrases:
            score = fuzz.ratio(heard, phrase)
            if best is None or score > best.score:
                best = Match(cmd, phrase, heard, score)
    return best


def _confirm_score(commands: CommandSet, heard_text: str) -> float:
    fuzz = require("rapidfuzz.fuzz", "dictation", package="rapidfuzz")
    return fuzz.ratio(normalize_phrase(heard_text), commands.confirm_phrase)


# -- running ---------------------------------------------------------------------------------------------
class ProgramRunner:
    """Starts `run` programs: the argument list from the file, no shell, no input, its own session (so
    Ctrl+C in streamer's terminal does not reach it). A waiter thread reports a failing exit."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen:
        try:
            proc = subprocess.Popen(list(argv), shell=False, stdin=subprocess.DEVNULL, close_fds=True,
                                    start_new_session=True)
        except OSError as exc:
            raise SinkError(f"command: {name}: cannot run {argv[0]}: {exc.strerror}") from exc
        self.started.append(proc)
        threading.Thread(target=self._wait, args=(name, proc), name=f"command-{name}", daemon=True).start()
        return proc

    def _wait(self, name: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if code != 0:
            program = cast(list[str], proc.args)[0]  # started from a list of arguments (start above)
            self.say(f"command: {name}: {os.path.basename(str(program))} exited with status {code}")


@dataclass(frozen=True)
class Outcome:
    """What a final did to the command layer. `consumed`: it was a command (or a confirmation) and must not
    be dictated."""

    consumed: bool
    match: Match | None = None
    ran: Command | None = None


@dataclass
class _Pending:
    match: Match
    deadline_s: float


@dataclass
class CommandRouter:
    """Matches finals against a CommandSet and carries out actions through the callbacks it is given:
    insert(text), press(chord), start(name, argv). Stateful only for a pending confirmation."""

    commands: CommandSet
    insert: Callable[[str], None]
    press: Callable[[str], None]
    start: Callable[[str, Sequence[str]], object]
    say: Callable[[str], None]
    #: --commands-only: report utterances that matched nothing, with the closest command.
    report_misses: bool = False
    _pending: _Pending | None = field(default=None, init=False)

    def handle(self, text: str, end_s: float) -> Outcome:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            name = pending.match.command.name
            if end_s > pending.deadline_s:
                self.say(f"command: {name} expired (no '{self.commands.confirm_phrase}' within "
                         f"{self.commands.confirm_timeout_s:g} s)")
            else:
                score = _confirm_score(self.commands, text)
                if score >= pending.match.command.threshold:
                    self.say(f"command: {name} confirmed (score {score:.0f})")
                    self._execute(pending.match.command)
                    return Outcome(True, pending.match, pending.match.command)
                self.say(f"command: {name} cancelled")
        match = best_match(self.commands, text)
        if match is None:
            return Outcome(False)
        if not match.accepted:
            if self.report_misses:
                self.say(f"command: no match for '{match.heard}' (closest: {match.command.name}, "
                         f"score {match.score:.0f} < {match.command.threshold:g})")
            return Outcome(False, match)
        cmd = match.command
        self.say(f"command: {cmd.name} matched '{match.heard}' (score {match.score:.0f})")
        if cmd.confirm:
            self._pending = _Pending(match, end_s + self.commands.confirm_timeout_s)
            self.say(f"command: {cmd.name} waits: say '{self.commands.confirm_phrase}' to {cmd.action.describe()}, "
                     "anything else cancels")
            return Outcome(True, match)
        self._execute(cmd)
        return Outcome(True, match, cmd)

    def _execute(self, cmd: Command) -> None:
        action = cmd.action
        if action.kind == "run":
            proc = self.start(cmd.name, action.argv)
            pid = getattr(proc, "pid", None)
            self.say(f"command: {cmd.name}: started {os.path.basename(action.argv[0])}"
                     + (f" (pid {pid})" if pid is not None else ""))
        elif action.kind == "keys":
            for chord in action.keys:
                self.press(chord)
            self.say(f"command: {cmd.name}: pressed {' '.join(action.keys)}")
        else:
            self.insert(action.text)
            self.say(f"command: {cmd.name}: inserted {len(action.text)} characters")
