"""The settings file: defaults < file < command-line flags, validation as one line, --print-config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamer.cli import build_parser, main
from streamer.cli.settings import default_config_path, format_settings, parse_args
from streamer.core.config import DEFAULT_MODEL
from streamer.errors import ConfigError

from desktop_fixtures import run_streamer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(autouse=True)
def isolated_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def load(argv, text=None, tmp_path=None):
    if text is not None:
        path = tmp_path / "settings.toml"
        path.write_text(text, encoding="utf-8")
        argv = ["--config", str(path), *argv]
    return parse_args(build_parser(), argv)


def test_defaults_without_a_file(tmp_path):
    loaded = load([])
    assert loaded.path is None
    assert loaded.args.model == DEFAULT_MODEL and loaded.args.clipboard == "off" and loaded.args.output == []
    assert default_config_path() == tmp_path / "xdg" / "streamer" / "config.toml"


def test_file_over_defaults_and_flags_over_file(tmp_path):
    text = '''
model = "demo"
hop-ms = 480
no-tui = true
clipboard = "append"
shaping = false
hotwords = ["open the editor"]
output = ["a.txt", "b.srt"]
max_segment_s = 12
'''
    args = load([], text, tmp_path).args
    assert (args.model, args.hop_ms, args.no_tui, args.clipboard, args.shaping) == ("demo", 480, True, "append", False)
    assert args.hotwords == ["open the editor"] and args.output == [str(tmp_path / "a.txt"), str(tmp_path / "b.srt")]
    assert args.max_segment_s == 12.0 and isinstance(args.max_segment_s, float)
    args = load(["--hop-ms", "120", "--shaping", "--hotwords", "save", "--output", "c.vtt", "--clipboard"],
                text, tmp_path).args
    assert args.hop_ms == 120 and args.shaping is True and args.clipboard == "replace"
    assert args.hotwords == ["save"] and args.output == ["c.vtt"]  # flags replace lists, they do not add
    assert args.model == "demo"


def test_the_default_file_is_read_when_it_exists(tmp_path):
    path = default_config_path()
    path.parent.mkdir(parents=True)
    path.write_text('model = "demo"\n')
    loaded = load([])
    assert loaded.path == path and loaded.args.model == "demo"


@pytest.mark.parametrize("text,expected", [
    ("hop_msx = 3\n", "unknown setting 'hop_msx'"),
    ("[window]\nhop-ms = 3\n", "unknown section [window]"),
    ("hop-ms = \"fast\"\n", "bad value for 'hop-ms'"),
    ("hop-ms = -5\n", "bad value for 'hop-ms': must not be negative"),
    ("hop-ms = 2.5\n", "bad value for 'hop-ms'"),
    ("no-tui = \"yes\"\n", "'no-tui' must be true or false"),
    ("device = \"tpu\"\n", "'device' must be one of \"auto\", \"cpu\", \"cuda\", not \"tpu\""),
    ("clipboard = true\n", "'clipboard' must be one of \"replace\", \"append\", \"paste\", \"off\", not true"),
    ("model = 3\n", "'model' must be a string, not 3"),
    ("output = 3\n", "'output' must be a list (or one value), not 3"),
    ("output = [1]\n", "'output' must be a list of strings, not 1"),
    ("config = \"other.toml\"\n", "unknown setting 'config'"),
    ("model = \n", "is not valid TOML"),
    # the expected type is named for every kind of value
    ("vad-aggressiveness = true\n", "'vad-aggressiveness' must be a whole number, not true"),
    ("hop-ms = [1]\n", "'hop-ms' must be a whole number (0 or more), not [1]"),
    ("beam-width = true\n", "'beam-width' must be a whole number (0 or more), not true"),
    ("max-segment-s = \"abc\"\n", "bad value for 'max-segment-s'"),
    ("vad-aggressiveness = 2.5\n", "bad value for 'vad-aggressiveness': expected a whole number, got 2.5"),
    ("commands = 3\n", "'commands' must be a string, not 3"),
    ("type = 1\n", "'type' must be true or false, not 1"),
    ("hotwords = [\"a\", [\"b\"]]\n", "'hotwords' must be a list of strings, not [\"b\"]"),
    ("hop-ms = 1\nhop_ms = 2\n", "'hop_ms' sets 'hop-ms' a second time"),
    ("hop_msx = 3\n", "did you mean 'hop-ms'?"),
    ("model = \"demo\"\nhop-ms = = 3\n", "(at line 2, column 10)"),
])
def test_bad_settings_are_one_line_naming_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load([], text, tmp_path)
    line = err.value.one_line()
    assert expected in line and "settings.toml" in line and "\n" not in line


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(["--config", str(tmp_path / "nope.toml")])


def test_print_config_round_trips(tmp_path):
    parser = build_parser()
    loaded = load(["--hop-ms", "300", "--hotwords", "a \"quoted\" word", "--type", "--no-capitalize",
                   "--file", str(tmp_path / "x.wav")])
    printed = format_settings(parser, loaded.args, loaded.path)
    data = tomllib.loads(printed)
    assert data["hop-ms"] == 300 and data["hotwords"] == ['a "quoted" word'] and data["type"] is True
    assert data["capitalize"] is False and "config" not in data and "print-config" not in data
    assert "# replay = (not set)" in printed
    again = load([], printed, tmp_path)
    assert {**vars(again.args), "config": None} == vars(loaded.args)


def test_main_print_config(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('model = "demo"\nhop-ms = 480\n')
    assert main(["--config", str(path), "--hop-ms", "100", "--print-config"]) == 0
    out = capsys.readouterr().out
    data = tomllib.loads(out)
    assert data["model"] == "demo" and data["hop-ms"] == 100
    assert f"defaults < {path} < command line" in out


def test_main_bad_settings_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text("nonsense = 1\n")
    assert main(["--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamer: error: settings file") and "'nonsense'" in err[0]


@pytest.mark.slow
def test_cli_subprocess_reads_the_platform_config_dir(tmp_path):
    config = tmp_path / "xdg-config" / "streamer" / "config.toml"  # run_streamer sets XDG_CONFIG_HOME
    config.parent.mkdir(parents=True)
    config.write_text('vad-aggressiveness = 3\nclipboard = "append"\n')
    out = run_streamer(["--print-config", "--clipboard", "replace"], tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    data = tomllib.loads(out.stdout)
    assert data["vad-aggressiveness"] == 3 and data["clipboard"] == "replace"
    assert str(Path(config)) in out.stdout
