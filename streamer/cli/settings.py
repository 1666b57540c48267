"""The settings file: every command-line option can also be set in TOML, in the platform's config folder
(platformdirs.user_config_dir("streamer") / "config.toml") or in the file given with --config.

Precedence: built-in defaults < the settings file < flags on the command line. Keys are the long option
names without the dashes (`hop-ms = 240`, `no-tui = true`, `output = ["a.txt"]`; underscores work too).
`streamer --print-config` prints the effective settings in the same format. The option list comes from the
argument parser itself, so every flag added to the CLI is a setting without further work.

Paths in the file (the values of options whose metavar is PATH or FILE, and a model given as a local folder)
are relative to the file's own folder, never to the working folder, so the file means the same from anywhere.

Trust: the keys in GUARDED make streamer run programs, replace files or press Return for you. A settings file
that sets one of them (and the command line does not override it) must pass the same check as a commands file
(streamer.sinks.commands.distrust: yours or root's, writable only by its owner, folders above it included);
otherwise it is refused with one line naming the file and the key. Other keys are read from any file.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from streamer.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILE_NAME = "config.toml"
#: Options that act once rather than configure a run; they cannot be set in the file.
NOT_SETTINGS = frozenset({"help", "version", "config", "print_config", "list_devices"})
#: Settings (dest -> what they do) that a settings file may turn on only when it passes the trust check.
GUARDED = {
    "commands": "makes streamer run programs",
    "overwrite": "lets streamer replace existing files",
    "type_newlines": "makes streamer press Return in the focused window",
}
#: Option metavars whose values are paths (resolved from the settings file's folder).
PATH_METAVARS = frozenset({"PATH", "FILE"})


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("streamer")) / CONFIG_FILE_NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("settings")
    g.add_argument("--config", metavar="PATH",
                   help=f"settings file (TOML; default {default_config_path()} when it exists)")
    g.add_argument("--print-config", action="store_true",
                   help="print the effective settings (defaults < settings file < flags) as TOML and exit")


@dataclass(frozen=True)
class _Option:
    key: str  # the settings key: the first long option name without "--"
    action: argparse.Action


def _options(parser: argparse.ArgumentParser) -> dict[str, _Option]:
    """Settings keys -> options, for every option that configures a run."""
    out: dict[str, _Option] = {}
    for action in parser._actions:  # argparse has no public list of its actions
        if action.dest in NOT_SETTINGS or action.dest is argparse.SUPPRESS or not action.option_strings:
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        key = (longs[0] if longs else action.option_strings[0]).lstrip("-")
        out[key] = _Option(key, action)
    return out


def _explicit(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """Only the options given on the command line (parsed with every default suppressed)."""
    saved = [(a, a.default) for a in parser._actions]
    saved_defaults = dict(parser._defaults)
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
        parser._defaults.clear()
        return vars(parser.parse_args(argv))
    finally:
        for a, d in saved:
            a.default = d
        parser._defaults.update(saved_defaults)


def _kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return "bool"
    if isinstance(action, argparse._AppendAction):
        return "list"
    if isinstance(action, argparse._CountAction):
        return "count"
    if isinstance(action, argparse._StoreConstAction):
        return "const"
    return "value"


#: Converters' names -> what a value must be, for messages.
_TYPE_NAMES = {"int": "a whole number", "float": "a number", "positive_int": "a whole number (0 or more)",
               "finite_float": "a finite number"}


def _expected(action: argparse.Action) -> str:
    """What one value of this option must be, in words."""
    if action.choices is not None:
        return "one of " + ", ".join(json.dumps(str(c)) for c in action.choices)
    if action.type is None or action.type is str:
        return "a string"
    name = getattr(action.type, "__name__", "")
    return _TYPE_NAMES.get(name, f"a {name.replace('_', ' ')}" if name else "a value")


def _convert_one(option: _Option, value, where: str, in_list: bool = False):
    action = option.action
    expected = _expected(action)
    if in_list:
        expected = f"a list of {expected.removeprefix('a ')}s" if expected.startswith("a ") else f"a list of: {expected}"
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: '{option.key}' must be {expected}, not {_toml_value(value)}")
    if action.type is not None and action.type is not str:
        convert = cast("Callable[[str], Any]", action.type)  # a converter: no parser here registers type names
        try:
            value = convert(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            # a converter's own message says what it expects; a plain int / float does not
            detail = (str(exc) if isinstance(exc, argparse.ArgumentTypeError)
                      else f"expected {_expected(action)}, got {_toml_value(value)}")
            raise ConfigError(f"{where}: bad value for '{option.key}': {detail}") from None
    elif not isinstance(value, str):
        raise ConfigError(f"{where}: '{option.key}' must be {expected}, not {_toml_value(value)}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: '{option.key}' must be {_expected(action)}, not {_toml_value(value)}")
    return value


def _convert(option: _Option, value, where: str):
    kind = _kind(option.action)
    if kind in ("bool", "const"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{option.key}' must be true or false, not {_toml_value(value)}")
        if kind == "const":
            return option.action.const if value else option.action.default
        if isinstance(option.action, argparse._StoreFalseAction):
            return not value  # `no-foo = true` is the flag --no-foo given
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: '{option.key}' must be a whole number (0 or more), not {_toml_value(value)}")
        return value
    if kind == "list":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{option.key}' must be a list (or one value), not {_toml_value(value)}")
        return [_convert_one(option, v, where, in_list=True) for v in value]
    return _convert_one(option, value, where)


def _resolve_path(value: str, folder: Path) -> str:
    """A path from the settings file: ~ expanded, relative ones from the file's folder; "-" (stdin) kept."""
    if value == "-" or not value:
        return value
    p = Path(value).expanduser()
    return value if p.is_absolute() and str(p) == value else os.path.normpath(folder / p)


def _resolve_model(value: str, folder: Path) -> str:
    """A model is a hub id or a local folder: a local one ('./x', '~/x', '/x', or a name that exists next to
    the settings file) is made absolute from the file's folder, as the command line does from the working one."""
    looks_local = value.startswith(("./", "../", "~", os.sep)) or value in (".", "..")
    if looks_local or (folder / value).exists():
        return _resolve_path(value, folder)
    return value


def _resolve_paths(values: dict, options: dict[str, _Option], folder: Path) -> None:
    for option in options.values():
        dest = option.action.dest
        if dest not in values or values[dest] is None:
            continue
        if dest == "model":
            values[dest] = _resolve_model(values[dest], folder)
        elif option.action.metavar in PATH_METAVARS:
            v = values[dest]
            values[dest] = [_resolve_path(x, folder) for x in v] if isinstance(v, list) else _resolve_path(v, folder)


def _unknown_hint(key: str, options: dict[str, _Option]) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), list(options), n=1, cutoff=0.7)
    if close:
        return f"did you mean '{close[0]}'? streamer --print-config lists every setting"
    return "streamer --print-config lists every setting; they are the long option names"


def read_file(path: Path, parser: argparse.ArgumentParser) -> dict:
    """The settings in a file as {dest: value}, validated against the parser's options; paths resolved from
    the file's folder."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"settings file {path} does not exist", "check the path given to --config") from None
    except IsADirectoryError:
        raise ConfigError(f"settings file {path} is a folder", "give the path of a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"settings file {path} is not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}", "fix the line named") from None
    options = _options(parser)
    where = f"settings file {path}"
    values: dict = {}
    for key, value in data.items():
        option = options.get(key) or options.get(key.replace("_", "-"))
        if option is None:
            if isinstance(value, dict):
                raise ConfigError(f"{where}: unknown section [{key}]", "settings are top-level keys, e.g. model = \"demo\"")
            raise ConfigError(f"{where}: unknown setting '{key}'", _unknown_hint(key, options))
        if option.action.dest in values:
            raise ConfigError(f"{where}: '{key}' sets '{option.key}' a second time", "keep one of the two keys")
        values[option.action.dest] = _convert(option, value, where)
    _resolve_paths(values, options, path.absolute().parent)
    return values


def _turned_on(value) -> bool:
    return bool(value)  # commands = "" or [] or false leave the guarded thing off


def check_trust(path: Path, file_values: dict, explicit: dict, parser: argparse.ArgumentParser,
                uid: int | None = None) -> None:
    """Refuse a settings file that turns on a GUARDED setting (not overridden on the command line) unless
    only you or root could have written it."""
    from streamer.sinks.commands import distrust

    keys = [dest for dest in GUARDED if _turned_on(file_values.get(dest)) and dest not in explicit]
    if not keys:
        return
    try:
        issue = distrust(path, uid=uid)
    except OSError as exc:
        raise ConfigError(f"cannot check settings file {path}: {exc.strerror}") from None
    if issue is None:
        return
    dest = keys[0]
    key = next(o.key for o in _options(parser).values() if o.action.dest == dest)
    raise ConfigError(f"settings file {path}: '{key}' {GUARDED[dest]}, so the file must be yours and writable only "
                      f"by you, but {issue.problem}", f"{issue.fix}, or give --{key} on the command line")


@dataclass(frozen=True)
class Loaded:
    args: argparse.Namespace
    #: The settings file that was read, or None.
    path: Path | None


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> Loaded:
    """Parse the command line over the settings file over the parser's defaults."""
    explicit = _explicit(parser, argv)  # also reports bad flags first, as one line
    config = explicit.get("config")
    path: Path | None = Path(config).expanduser().absolute() if config else default_config_path()
    if config is None and path is not None and not path.is_file():
        path = None
    file_values = read_file(path, parser) if path is not None else {}
    if path is not None:
        check_trust(path, file_values, explicit, parser)
    defaults = vars(parser.parse_args([]))
    merged = {**defaults, **file_values, **explicit}
    return Loaded(argparse.Namespace(**merged), path)


# -- printing --------------------------------------------------------------------------------------------
def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # JSON string escapes are valid TOML basic strings


def format_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, path: Path | None) -> str:
    """The effective settings as TOML that --config reads back unchanged."""
    source = f"defaults < {path} < command line" if path else "defaults < command line (no settings file)"
    lines = [f"# streamer settings in effect: {source}",
             f"# default settings file: {default_config_path()}"]
    for key, option in _options(parser).items():
        value = getattr(args, option.action.dest, None)
        kind = _kind(option.action)
        if kind == "const":
            value = value == option.action.const
        elif isinstance(option.action, argparse._StoreFalseAction):
            value = not value
        if value is None:
            lines.append(f"# {key} = (not set)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    commands = getattr(args, "commands", None)
    if commands:
        from streamer.sinks.commands import load_commands

        loaded = load_commands(commands)  # checked as a run checks it: a bad file is the same one-line error
        lines.append(f"# voice commands in {loaded.path} (programs as resolved now, absolute):")
        lines += [f"#   {line}" for line in loaded.describe()]
    return "\n".join(lines) + "\n"
