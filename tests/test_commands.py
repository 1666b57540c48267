"""Voice commands: loading and validating the TOML file, fuzzy matching on finals, the confirmation flow,
and the safety bar (only listed programs run, with the file's fixed arguments; speech never reaches a command
line). Programs really run here; a marker file tells whether they did."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from streamer.core.events import FinalEvent, PartialEvent
from streamer.errors import ConfigError
from streamer.sinks.commands import best_match, load_commands
from streamer.sinks.desktop import DesktopOptions, DesktopSink, build_desktop_sink

from desktop_fixtures import demo_model_or_skip, espeak_clip, run_streamer, speech_clip, tiny_model, wait_for  # noqa: F401
from helpers import RecordingTyper

MARKER_SCRIPT = "import sys; open(sys.argv[1], 'a').write(repr(sys.argv[1:]) + '\\n')"


def marker_command(name: str, phrase: str, marker: Path, extra: str = "") -> str:
    run = [sys.executable, "-c", MARKER_SCRIPT, str(marker)]
    return f"[commands.{name}]\nphrase = {toml_list([phrase])[1:-1]}\nrun = {toml_list(run)}\n{extra}\n"


def written(marker: Path):
    """The marker program has run to the end (its line is complete), not merely created the file."""
    return lambda: marker.exists() and marker.read_text().endswith("\n")


def toml_list(items) -> str:
    import json

    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def write(tmp_path: Path, text: str, name: str = "commands.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    p.chmod(0o644)
    return p


def final(text: str, end_s: float = 1.0, seg: int = 0) -> FinalEvent:
    return FinalEvent(audio_time_s=end_s, wall_time_s=0.0, segment_id=seg, text=text, words=(), start_s=0.0, end_s=end_s)


class Said(list):
    def __call__(self, msg: str) -> None:
        self.append(msg)




def sink_for(path: Path, commands_only=True, typer=None, **opts):
    said = Said()
    options = DesktopOptions(commands=path, commands_only=commands_only, **opts)
    return DesktopSink(options, typer=typer, commands=load_commands(path), say=said), said


# -- loading -------------------------------------------------------------------------------------------------
def test_load_a_full_file(tmp_path):
    path = write(tmp_path, f'''
threshold = 80
confirm_phrase = "Yes, do it!"
{marker_command("open-editor", "Open the Editor", tmp_path / "m")}
[commands.save]
phrases = ["save the file", "save it"]
keys = ["ctrl+s", "Return"]
confirm = true
threshold = 95

[commands.sign]
phrase = "insert signature"
insert = "Best regards"
''')
    cs = load_commands(path)
    assert [c.name for c in cs.commands] == ["open-editor", "save", "sign"]
    assert cs.commands[0].phrases == ("open the editor",)
    assert cs.commands[0].action.argv[0] == sys.executable
    assert cs.commands[0].threshold == 80 and cs.commands[1].threshold == 95
    assert cs.confirm_phrase == "yes do it"
    assert cs.phrases == ("open the editor", "save the file", "save it", "insert signature", "yes do it")


def test_program_names_resolve_on_path_when_loaded(tmp_path):
    cs = load_commands(write(tmp_path, '[commands.a]\nphrase = "list"\nrun = ["ls", "-l"]\n'))
    assert os.path.isabs(cs.commands[0].action.argv[0]) and cs.commands[0].action.argv[1:] == ("-l",)


@pytest.mark.parametrize("body,expected", [
    ('bogus = 1\n[commands.a]\nphrase = "x"\ninsert = "y"\n', "bogus: unknown setting"),
    ('[commands.a]\nphrase = "x"\ninsert = "y"\nshell = true\n', "commands.a.shell: unknown setting"),
    ('[commands.a]\nphrase = "x"\ninsert = "y"\nkeys = ["a"]\n', "commands.a: give exactly one action"),
    ('[commands.a]\nphrase = "x"\n', "commands.a: give exactly one action"),
    ('[commands.a]\ninsert = "y"\n', "commands.a: give either phrase or phrases"),
    ('[commands.a]\nphrase = "!!"\ninsert = "y"\n', "commands.a.phrase: phrase '!!' has no words"),
    ('[commands.a]\nphrase = "x"\nkeys = ["ctrl+s; rm"]\n', "commands.a.keys: bad key name"),
    ('[commands.a]\nphrase = "x"\nkeys = ["hyper+s"]\n', "commands.a.keys: unknown modifier"),
    ('[commands.a]\nphrase = "x"\nrun = ["no-such-program-here"]\n', "commands.a.run: program 'no-such-program-here' is not on PATH"),
    ('[commands.a]\nphrase = "x"\nrun = "ls -l"\n', "commands.a.run: must be a non-empty list of strings"),
    ('[commands.a]\nphrase = "x"\nrun = []\n', "commands.a.run: must be a non-empty list of strings"),
    ('[commands.a]\nphrase = "x"\ninsert = "y"\n[commands.b]\nphrase = "X!"\ninsert = "z"\n',
     "commands.b.phrase: phrase 'x' is also used by commands.a"),
    ('[commands.a]\nphrase = "x"\ninsert = "y"\nthreshold = 120\n', "commands.a.threshold: must be a number from 0 to 100"),
    ('[commands.a]\nphrase = "x"\ninsert = "y"\nconfirm = "yes"\n', "commands.a.confirm: must be true or false"),
    ('threshold = 50\n', "commands: no commands"),
    ('[commands.a\nphrase = "x"\n', "is not valid TOML"),
])
def test_bad_files_are_one_line_naming_file_and_key(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_commands(path)
    line = err.value.one_line()
    assert expected in line and str(path) in line and "\n" not in line


def test_missing_and_world_writable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_commands(tmp_path / "nope.toml")
    path = write(tmp_path, '[commands.a]\nphrase = "x"\ninsert = "y"\n')
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by every user"):
        load_commands(path)


# -- matching and running (FinalEvents straight into the sink) ----------------------------------------------
def test_listed_program_runs_and_prints_the_match(tmp_path):
    marker = tmp_path / "marker"
    sink, said = sink_for(write(tmp_path, marker_command("open-editor", "open the editor", marker)))
    sink.handle(PartialEvent(0.5, 0.0, 0, "OPEN THE EDITOR", "", 0.5, 0.5))  # partials never act
    sink.process("OPEN THE EDITER", 1.0)
    assert wait_for(written(marker))
    assert marker.read_text() == repr([str(marker)]) + "\n"  # exactly the file's arguments
    assert said[0] == "command: open-editor matched 'open the editer' (score 93)"
    assert said[1].startswith("command: open-editor: started ")


def test_partials_are_never_acted_on(tmp_path):
    marker = tmp_path / "marker"
    sink, _ = sink_for(write(tmp_path, marker_command("m", "open the editor", marker)))
    for i in range(3):
        sink.handle(PartialEvent(i, 0.0, 0, "OPEN THE EDITOR", "", i, i))
    sink.close()
    assert sink.processed == 0 and not marker.exists()


@pytest.mark.parametrize("heard", ["OPEN THE DOOR", "CLOSE THE EDITOR", "GOOD MORNING", "OPEN", "",
                                   "OPEN THE EDITOR AND DELETE EVERYTHING"])
def test_near_misses_and_unlisted_phrases_run_nothing(tmp_path, heard):
    marker = tmp_path / "marker"
    sink, said = sink_for(write(tmp_path, marker_command("open-editor", "open the editor", marker)))
    sink.handle(final(heard))
    sink.close()
    assert sink.runner.started == []  # no program was started, so none can write the marker later
    assert not marker.exists()
    assert not any("matched" in s for s in said)
    if heard:
        assert any(s.startswith(f"command: no match for '{heard.lower()}'") for s in said)


@pytest.mark.parametrize("heard,runs", [
    ("RUN SEMICOLON TOUCH X", False), ("; touch pwned", False), ("$(touch pwned)", False),
    ("make marker; touch pwned", True), ("make marker && touch pwned", True), ("make marker `touch pwned`", True),
    ("make marker $(touch pwned)", True), ("make marker | sh -c 'touch pwned'", True),
])
def test_shell_metacharacters_in_speech_are_never_executed(tmp_path, heard, runs, monkeypatch):
    """Even a final that matches (threshold lowered to 30 to let these through) only starts the program of
    the file with the file's arguments: nothing said reaches a shell or an argument list."""
    marker = tmp_path / "marker"
    path = write(tmp_path, marker_command("mark", "make marker", marker, "threshold = 30"))
    sink, said = sink_for(path)
    monkeypatch.chdir(tmp_path)  # a "touch pwned" run anywhere would land here
    outcome = sink.router.handle(heard, 1.0)
    assert (outcome.ran is not None) == runs, (heard, outcome)
    assert len(sink.runner.started) == int(runs)
    if runs:
        assert wait_for(written(marker))
        assert marker.read_text() == repr([str(marker)]) + "\n"  # the file's arguments, nothing heard
    for proc in sink.runner.started:  # every program started has ended: nothing more can appear
        assert proc.wait(timeout=10) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["commands.toml"] + (["marker"] if runs else []))


@pytest.mark.parametrize("heard,accepted", [("open the editer", True), ("open the door", False),
                                            ("open the dor", False)])
def test_default_threshold_takes_a_wrong_letter_not_a_different_word(tmp_path, heard, accepted):
    """'open the dor' is how the demo model heard "open the door": it must not open the editor."""
    cs = load_commands(write(tmp_path, marker_command("e", "open the editor", tmp_path / "e")))
    assert best_match(cs, heard).accepted is accepted


def test_best_command_wins_and_reports_its_score(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    path = write(tmp_path, marker_command("a", "open the editor", a) + marker_command("b", "open the terminal", b))
    cs = load_commands(path)
    m = best_match(cs, "OPEN THE TERMINAL")
    assert m.command.name == "b" and m.score == 100 and m.accepted
    sink, said = sink_for(path)
    sink.process("open the terminal", 1.0)
    assert wait_for(written(b)) and not a.exists()


def test_confirmation_flow(tmp_path):
    marker = tmp_path / "marker"
    path = write(tmp_path, 'confirm_timeout_s = 5\n' + marker_command("wipe", "wipe the disk", marker, "confirm = true"))
    sink, said = sink_for(path)
    sink.process("WIPE THE DISK", 1.0)
    sink.process("NO WAIT", 2.0)  # anything else cancels
    sink.process("CONFIRM", 3.0)  # too late: nothing pending
    assert sink.runner.started == [] and not marker.exists()
    assert "command: wipe cancelled" in said
    sink.process("WIPE THE DISK", 10.0)
    sink.process("CONFIRM", 16.0)  # after confirm_timeout_s of audio
    assert sink.runner.started == [] and not marker.exists()
    assert any("wipe expired" in s for s in said)
    sink.process("WIPE THE DISK", 20.0)
    sink.process("CONFIRM", 22.0)
    assert wait_for(written(marker))
    assert "command: wipe confirmed (score 100)" in said and len(sink.runner.started) == 1


def test_keys_and_insert_actions_and_dictation_around_them(tmp_path):
    path = write(tmp_path, '[commands.save]\nphrase = "save the file"\nkeys = ["ctrl+s"]\n'
                           '[commands.sign]\nphrase = "insert signature"\ninsert = " Best regards"\n')
    typer = RecordingTyper()
    sink, said = sink_for(path, commands_only=False, typer=typer, type=True)
    for text in ["HELLO PERIOD", "SAVE THE FILE", "INSERT SIGNATURE", "SCRATCH THAT", "BYE"]:
        sink.process(text, 1.0)
    assert typer.calls == [("type", "Hello."), ("press", "ctrl+s"), ("type", " Best regards"),
                           ("backspace", len(" Best regards")), ("type", " Bye")]
    only_typer = RecordingTyper()
    sink, _ = sink_for(path, commands_only=True, typer=only_typer)
    for text in ["HELLO", "INSERT SIGNATURE"]:
        sink.process(text, 1.0)
    assert only_typer.calls == [("type", " Best regards")]  # commands only: nothing dictated


def test_build_checks_tools_before_the_model_loads(tmp_path):
    path = write(tmp_path, '[commands.save]\nphrase = "save the file"\nkeys = ["ctrl+s"]\n')
    options = DesktopOptions(commands=path, commands_only=True)
    from streamer.errors import SinkError

    with pytest.raises(SinkError, match=r"keys action of commands\.save .* needs a graphical session"):
        build_desktop_sink(options, env={})
    with pytest.raises(ConfigError, match="--commands-only needs --commands"):
        build_desktop_sink(replace(options, commands=None), env={})


# -- end to end through the CLI ------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_file_replay_runs_a_command_from_a_final(tmp_path, tiny_model, speech_clip):
    """The whole chain with a real (tiny, random) model: the first run learns what the model hears and
    shows that an unlisted phrase runs nothing; the second lists that phrase and the program runs."""
    marker = tmp_path / "marker"
    unlisted = write(tmp_path, marker_command("m", "open the editor", marker), "unlisted.toml")
    first = run_streamer(["--file", str(speech_clip), "--no-tui", "--model", str(tiny_model),
                          "--commands", str(unlisted), "--commands-only"], tmp_path)
    assert first.returncode == 0, first.stderr
    heard = first.stdout.splitlines()
    assert heard, "the tiny model produced no finals"
    assert "no match for" in first.stderr
    assert not marker.exists()
    listed = write(tmp_path, marker_command("m", heard[0], marker), "listed.toml")
    second = run_streamer(["--file", str(speech_clip), "--no-tui", "--model", str(tiny_model),
                           "--commands", str(listed), "--commands-only"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"command: m matched '{heard[0].lower()}' (score 100)" in second.stderr
    assert wait_for(written(marker))
    assert marker.read_text().splitlines()[0] == repr([str(marker)])


@pytest.mark.slow
def test_demo_model_spoken_phrase_runs_the_listed_program(tmp_path):
    demo = demo_model_or_skip()
    marker = tmp_path / "marker"
    # A phrase the weak demo model (15% CER) hears nearly right: "STIRT RECORDING" scores 93.
    path = write(tmp_path, marker_command("record", "start recording", marker))
    clip = espeak_clip(tmp_path / "open.wav", ["start recording"])
    out = run_streamer(["--file", str(clip), "--no-tui", "--model", str(demo), "--commands", str(path),
                        "--commands-only"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "command: record matched" in out.stderr, (out.stdout, out.stderr)
    assert wait_for(written(marker))


@pytest.mark.slow
def test_demo_model_near_miss_and_unlisted_phrases_run_nothing(tmp_path):
    demo = demo_model_or_skip()
    marker = tmp_path / "marker"
    path = write(tmp_path, marker_command("open-editor", "open the editor", marker))
    clip = espeak_clip(tmp_path / "miss.wav", ["open the door", "good morning everyone"])
    out = run_streamer(["--file", str(clip), "--no-tui", "--model", str(demo), "--commands", str(path),
                        "--commands-only"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert ": started " not in out.stderr  # no program was started, so none can write the marker later
    assert not marker.exists(), out.stderr
    assert "matched" not in out.stderr and out.stderr.count("no match for") >= 1
