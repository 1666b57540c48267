"""The settings file: every command-line option can also be set in TOML, in the platform's config folder
(platformdirs.user_config_dir("streamer") / "config.toml") or in the file given with --config.

Precedence: built-in defaults < the settings file < flags on the command line. Keys are the long option
names without the dashes (`hop-ms = 240`, `no-tui = true`, `output = ["a.txt"]`; underscores work too).
`streamer --print-config` prints the effective settings in the same format. The option list comes from the
argument parser itself, so every flag added to the CLI is a setting without further work.
"""

from __future__ import annotations

import argparse
import json
import math
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


def _convert_one(option: _Option, value, where: str):
    action = option.action
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: '{option.key}' must be a single value, not {_toml_value(value)}")
    if action.type is not None and action.type is not str:
        convert = cast("Callable[[str], Any]", action.type)  # a converter: no parser here registers type names
        try:
            value = convert(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            name = getattr(action.type, "__name__", "value")
            detail = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"expected a {name}, got {value!r}"
            raise ConfigError(f"{where}: bad value for '{option.key}': {detail}") from None
    elif not isinstance(value, str):
        raise ConfigError(f"{where}: '{option.key}' must be a string, not {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: '{option.key}' must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return value


def _convert(option: _Option, value, where: str):
    kind = _kind(option.action)
    if kind in ("bool", "const"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{option.key}' must be true or false, not {value!r}")
        if kind == "const":
            return option.action.const if value else option.action.default
        if isinstance(option.action, argparse._StoreFalseAction):
            return not value  # `no-foo = true` is the flag --no-foo given
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: '{option.key}' must be a whole number, not {value!r}")
        return value
    if kind == "list":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{option.key}' must be a list, not {value!r}")
        return [_convert_one(option, v, where) for v in value]
    return _convert_one(option, value, where)


def read_file(path: Path, parser: argparse.ArgumentParser) -> dict:
    """The settings in a file as {dest: value}, validated against the parser's options."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"settings file {path} does not exist", "check the path given to --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"settings file {path} is not UTF-8 text") from None
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
            raise ConfigError(f"{where}: unknown setting '{key}'",
                              "streamer --print-config lists every setting; they are the long option names")
        values[option.action.dest] = _convert(option, value, where)
    return values


@dataclass(frozen=True)
class Loaded:
    args: argparse.Namespace
    #: The settings file that was read, or None.
    path: Path | None


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> Loaded:
    """Parse the command line over the settings file over the parser's defaults."""
    explicit = _explicit(parser, argv)  # also reports bad flags first, as one line
    config = explicit.get("config")
    path: Path | None = Path(config).expanduser() if config else default_config_path()
    if config is None and path is not None and not path.is_file():
        path = None
    file_values = read_file(path, parser) if path is not None else {}
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
    return "\n".join(lines) + "\n"
