"""The trust model: a file that can make streamer run programs (the commands file, a settings file that names
commands, overwrite or type-newlines) is obeyed only when no one but you or root could have written it, the
folders above it included; programs are resolved to absolute paths at load and must pass the same check;
relative paths in a settings file are relative to that file.

Files are built in tmp_path and given modes with os.chmod. "Owned by someone else" needs os.chown, which only
root may do: those tests run as root (chown to 65534, nobody) and are skipped otherwise; the uid the check
compares against can be passed in, which tests the same rule as any user. A group-writable entry is fine when
its group has the owner as its only member (a user private group); the tests stand for a shared group unless
they say otherwise (private_group patched), whatever groups this machine has."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

import streamer.sinks.commands as commands_module
from streamer.cli import build_parser, main
from streamer.cli.settings import parse_args
from streamer.errors import ConfigError
from streamer.sinks.commands import distrust, load_commands

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OTHER_UID = 65534  # nobody
as_root = pytest.mark.skipif(os.name != "posix" or os.getuid() != 0, reason="os.chown to another user needs root")
posix = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
pytestmark = posix

REAL_PRIVATE_GROUP = commands_module.private_group
INSERT = '[commands.a]\nphrase = "say hello"\ninsert = "hello"\n'


@pytest.fixture(autouse=True)
def isolated_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(autouse=True)
def shared_groups(monkeypatch):
    """Every group counts as shared (others in it), so "writable by its group" means writable by others."""
    monkeypatch.setattr(commands_module, "private_group", lambda gid, owner: False)


def make(folder: Path, name: str, text: str, mode: int = 0o644) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text, encoding="utf-8")
    p.chmod(mode)
    return p


def folder(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def refused(path: Path, *expected: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_commands(path)
    line = err.value.one_line()
    assert "\n" not in line and str(path) in line
    for e in expected:
        assert e in line, line
    return line


def script(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


# -- the commands file -----------------------------------------------------------------------------------
def test_a_file_of_your_own_in_private_folders_is_accepted(tmp_path):
    assert distrust(make(folder(tmp_path / "cfg", 0o755), "c.toml", INSERT)) is None
    assert load_commands(tmp_path / "cfg" / "c.toml").commands[0].name == "a"


@pytest.mark.parametrize("mode,who", [(0o664, "its group"), (0o666, "every user"), (0o646, "every user"),
                                      (0o620, "its group")])
def test_a_file_others_can_write_is_refused(tmp_path, mode, who):
    path = make(tmp_path, "c.toml", INSERT, mode)
    line = refused(path, f"can make streamer run programs, but the file is writable by {who}",
                   f"chmod go-w {path}")
    assert "writable by" in line


@pytest.mark.parametrize("mode,who", [(0o775, "its group"), (0o777, "every user"), (0o757, "every user")])
def test_a_writable_folder_above_is_refused(tmp_path, mode, who):
    shared = folder(tmp_path / "shared", mode)
    path = make(folder(shared / "deeper", 0o755), "c.toml", INSERT)  # the folder two levels up counts too
    refused(path, f"the folder {shared} above it is writable by {who}", f"chmod go-w {shared}")


def test_a_sticky_shared_folder_is_accepted_for_a_file_of_your_own(tmp_path):
    sticky = folder(tmp_path / "tmp-like", 0o1777)
    assert load_commands(make(sticky, "c.toml", INSERT)).commands


@as_root
def test_a_file_owned_by_someone_else_is_refused(tmp_path):
    path = make(tmp_path, "c.toml", INSERT)
    os.chown(path, OTHER_UID, OTHER_UID)
    refused(path, "the file is owned by", f"uid {OTHER_UID}", "not by you")


@as_root
def test_someone_elses_file_in_a_sticky_folder_is_refused(tmp_path):
    sticky = folder(tmp_path / "tmp-like", 0o1777)
    path = make(sticky, "c.toml", INSERT)
    os.chown(path, OTHER_UID, OTHER_UID)
    refused(path, f"uid {OTHER_UID}")


@as_root
def test_a_folder_owned_by_someone_else_is_refused(tmp_path):
    theirs = folder(tmp_path / "theirs", 0o755)
    path = make(theirs, "c.toml", INSERT)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    refused(path, f"the folder {theirs} above it is owned by", f"uid {OTHER_UID}")


@as_root
def test_a_symbolic_link_into_someone_elses_folder_is_refused(tmp_path):
    theirs = folder(tmp_path / "theirs", 0o755)
    target = make(theirs, "c.toml", INSERT)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    link = tmp_path / "mine" / "c.toml"
    link.parent.mkdir()
    link.symlink_to(target)
    refused(link, f"the folder {theirs} above it is owned by")


def test_the_uid_compared_is_the_callers_and_root_is_trusted(tmp_path):
    """The same rule for any user: the owner must be the given uid or root (0)."""
    path = make(tmp_path, "c.toml", INSERT)
    owner = os.stat(path).st_uid
    assert distrust(path, uid=owner) is None
    someone = owner + 12345
    issue = distrust(path, uid=someone)
    if owner == 0:
        assert issue is None  # a file of root's may be obeyed by everyone
    else:
        assert issue is not None and "not by you" in issue.problem


def test_a_folder_writable_by_others_behind_a_symbolic_link_is_refused(tmp_path):
    shared = folder(tmp_path / "shared", 0o777)
    target = make(shared, "c.toml", INSERT)
    link = tmp_path / "private" / "c.toml"
    link.parent.mkdir()
    link.symlink_to(target)
    refused(link, f"the folder {shared} above it is writable by every user")


# -- programs are resolved at load and checked like the file ----------------------------------------------
def run_file(tmp_path: Path, program: str) -> Path:
    return make(folder(tmp_path / "cfg", 0o755), "c.toml", f'[commands.go]\nphrase = "go"\nrun = ["{program}", "-x"]\n')


def test_a_program_found_earlier_on_path_in_a_writable_folder_is_refused(tmp_path, monkeypatch):
    planted = folder(tmp_path / "planted", 0o777)
    script(planted / "ls")
    monkeypatch.setenv("PATH", f"{planted}{os.pathsep}{os.environ['PATH']}")
    refused(run_file(tmp_path, "ls"), "commands.go.run", f"program 'ls' (found on PATH as {planted / 'ls'})",
            f"the folder {planted} above it is writable by every user")


def test_a_program_others_can_write_is_refused(tmp_path, monkeypatch):
    bin_ = folder(tmp_path / "bin", 0o755)
    script(bin_ / "tool", 0o775)
    monkeypatch.setenv("PATH", str(bin_))
    refused(run_file(tmp_path, "tool"), "the program is writable by its group")


@as_root
def test_a_program_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    bin_ = folder(tmp_path / "bin", 0o755)
    os.chown(script(bin_ / "tool"), OTHER_UID, OTHER_UID)
    monkeypatch.setenv("PATH", str(bin_))
    refused(run_file(tmp_path, "tool"), "the program is owned by", f"uid {OTHER_UID}")


def test_a_program_on_a_relative_path_entry_is_refused(tmp_path, monkeypatch):
    work = folder(tmp_path / "work", 0o755)
    script(work / "tool")
    monkeypatch.chdir(work)
    monkeypatch.setenv("PATH", f".{os.pathsep}/usr/bin")
    refused(run_file(tmp_path, "tool"), "relative PATH entry")


def test_programs_are_absolute_after_loading_and_in_the_status_line(tmp_path, monkeypatch):
    from streamer.sinks.desktop import DesktopOptions, build_desktop_sink

    bin_ = folder(tmp_path / "bin", 0o755)
    script(bin_ / "tool")
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}/usr/bin")
    path = run_file(tmp_path, "tool")
    cs = load_commands(path)
    assert cs.commands[0].action.argv == (str(bin_ / "tool"), "-x") and cs.programs == (str(bin_ / "tool"),)
    lines: list[str] = []
    build_desktop_sink(DesktopOptions(commands=path, commands_only=True), env={}, status=lines.append)
    assert any(f"may run {bin_ / 'tool'}" in line for line in lines), lines


# -- the settings file ------------------------------------------------------------------------------------
def settings(folder_: Path, text: str, mode: int = 0o644) -> Path:
    return make(folder_, "settings.toml", text, mode)


def load(argv):
    return parse_args(build_parser(), argv)


@pytest.mark.parametrize("text,key", [
    ('commands = "/nonexistent/c.toml"\n', "commands"),
    ('overwrite = true\noutput = ["out.txt"]\n', "overwrite"),
    ('type-newlines = true\n', "type-newlines"),
])
@pytest.mark.parametrize("mode,who", [(0o664, "its group"), (0o666, "every user")])
def test_a_settings_file_others_can_write_may_not_turn_on_guarded_keys(tmp_path, text, key, mode, who):
    path = settings(tmp_path, text, mode)
    with pytest.raises(ConfigError) as err:
        load(["--config", str(path)])
    line = err.value.one_line()
    assert line.startswith(f"settings file {path}: '{key}' ") and f"the file is writable by {who}" in line
    assert f"chmod go-w {path}" in line and f"--{key} on the command line" in line and "\n" not in line


def test_a_settings_file_in_a_writable_folder_may_not_name_commands(tmp_path):
    shared = folder(tmp_path / "shared", 0o777)
    path = settings(shared, 'commands = "c.toml"\n')
    with pytest.raises(ConfigError, match=f"'commands' makes streamer run programs, .* the folder {shared} above"):
        load(["--config", str(path)])


@as_root
def test_someone_elses_settings_file_may_not_name_commands(tmp_path):
    path = settings(tmp_path, 'commands = "c.toml"\n')
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError, match=f"uid {OTHER_UID}"):
        load(["--config", str(path)])
    path.write_text('model = "demo"\n')  # other keys are read from any file
    assert load(["--config", str(path)]).args.model == "demo"


def test_harmless_keys_and_guarded_keys_turned_off_are_read_from_any_file(tmp_path):
    path = settings(tmp_path, 'model = "demo"\noverwrite = false\ncommands = ""\ntype-newlines = false\n', 0o666)
    args = load(["--config", str(path)]).args
    assert args.model == "demo" and args.overwrite is False


def test_the_command_line_overrides_a_guarded_key_of_an_untrusted_file(tmp_path):
    mine = make(tmp_path, "c.toml", INSERT)
    path = settings(tmp_path, 'commands = "/elsewhere/c.toml"\n', 0o666)
    assert load(["--config", str(path), "--commands", str(mine)]).args.commands == str(mine)


def test_a_trusted_settings_file_may_name_commands(tmp_path):
    cfg = folder(tmp_path / "cfg", 0o700)
    make(cfg, "c.toml", INSERT)
    path = settings(cfg, 'commands = "c.toml"\noverwrite = true\ntype-newlines = true\n', 0o600)
    args = load(["--config", str(path)]).args
    assert args.commands == str(cfg / "c.toml") and args.overwrite is True and args.type_newlines is True


def test_relative_paths_are_relative_to_the_settings_file(tmp_path, monkeypatch):
    cfg = folder(tmp_path / "cfg", 0o755)
    (cfg / "my-model").mkdir()
    path = settings(cfg, 'output = ["out/a.txt", "../b.srt", "/abs/c.vtt"]\ncommands = "cmds/c.toml"\n'
                         'lm = "words.arpa"\nfile = "talk.wav"\nmodel = "my-model"\n')
    monkeypatch.chdir(tmp_path)  # somewhere else
    args = load(["--config", str(path)]).args
    assert args.output == [str(cfg / "out" / "a.txt"), str(tmp_path / "b.srt"), "/abs/c.vtt"]
    assert args.commands == str(cfg / "cmds" / "c.toml") and args.lm == str(cfg / "words.arpa")
    assert args.file == str(cfg / "talk.wav") and args.model == str(cfg / "my-model")


def test_hub_ids_stdin_and_home_paths_in_the_settings_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = settings(tmp_path, 'model = "facebook/wav2vec2-base-960h"\nfile = "-"\noutput = ["~/t.txt"]\n')
    args = load(["--config", str(path)]).args
    assert args.model == "facebook/wav2vec2-base-960h" and args.file == "-"
    assert args.output == [str(tmp_path / "home" / "t.txt")]


def test_relative_flags_stay_relative_to_the_working_folder(tmp_path):
    path = settings(folder(tmp_path / "cfg", 0o755), 'model = "demo"\n')
    args = load(["--config", str(path), "--output", "x.txt"]).args
    assert args.output == ["x.txt"]  # the command line is read from where it is typed


def test_the_default_settings_file_is_checked_too(tmp_path):
    from streamer.cli.settings import default_config_path

    path = default_config_path()
    path.parent.mkdir(parents=True)
    path.write_text('commands = "c.toml"\n')
    path.chmod(0o664)
    with pytest.raises(ConfigError, match=f"settings file {path}: 'commands'"):
        load([])


# -- --print-config shows what would run -----------------------------------------------------------------
def test_print_config_shows_the_programs_as_absolute_paths(tmp_path, monkeypatch, capsys):
    bin_ = folder(tmp_path / "bin", 0o755)
    script(bin_ / "tool")
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}/usr/bin")
    cmds = run_file(tmp_path, "tool")
    path = settings(tmp_path / "cfg", 'commands = "c.toml"\n')
    assert main(["--config", str(path), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert tomllib.loads(out)["commands"] == str(cmds)
    assert f"#   commands.go: 'go' runs {bin_ / 'tool'} -x" in out


def test_print_config_refuses_an_untrusted_commands_file(tmp_path, capsys):
    cmds = make(tmp_path, "c.toml", INSERT, 0o666)
    assert main(["--commands", str(cmds), "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writable by every user" in err[0]


def test_modes_are_what_the_tests_think(tmp_path):
    """Guard for the tests above: a umask or file system that ignores chmod would make them vacuous."""
    p = make(tmp_path, "m", "", 0o664)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o664


# -- user private groups (umask 002): group-writable by a group of one is writable by the owner alone --------
def test_group_writable_in_a_user_private_group_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setattr(commands_module, "private_group", lambda gid, owner: True)
    shared = folder(tmp_path / "mine", 0o775)
    assert load_commands(make(shared, "c.toml", INSERT, 0o664)).commands
    refused(make(shared, "d.toml", INSERT, 0o666), "the file is writable by every user")  # others stay others


def test_which_groups_are_private(monkeypatch):
    from types import SimpleNamespace as NS

    users = [NS(pw_name="ada", pw_uid=1000, pw_gid=1000), NS(pw_name="bob", pw_uid=1001, pw_gid=1001),
             NS(pw_name="eve", pw_uid=1002, pw_gid=100)]
    groups = {1000: NS(gr_name="ada", gr_mem=[]), 1001: NS(gr_name="bob", gr_mem=["ada"]),
              100: NS(gr_name="users", gr_mem=["ada"]), 50: NS(gr_name="staff", gr_mem=["ada"]),
              60: NS(gr_name="empty", gr_mem=[])}

    def getgrgid(gid):
        return groups[gid]

    def getpwuid(uid):
        return next(u for u in users if u.pw_uid == uid)

    monkeypatch.setattr(commands_module.grp, "getgrgid", getgrgid)
    monkeypatch.setattr(commands_module.pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(commands_module.pwd, "getpwall", lambda: users)
    private = REAL_PRIVATE_GROUP  # the autouse fixture replaced the module's
    assert private(1000, 1000)  # ada's own group, no one else in it
    assert not private(1001, 1000)  # bob's primary group, with ada listed
    assert not private(100, 1000)  # eve's primary group
    assert private(50, 1000)  # a group whose only listed member is ada
    assert not private(60, 1000)  # no members at all: not the owner's (setgid tools use such groups)
    assert not private(1000, 1001) and not private(4242, 1000)
