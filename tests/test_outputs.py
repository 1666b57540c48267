"""Transcript files (.txt, .srt, .vtt, .jsonl) are written as finals arrive: a crash (SIGKILL mid-run) loses
at most the utterance in progress."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from streamer.core.events import FinalEvent, PartialEvent, StatsEvent, Word
from streamer.sinks.files import open_output

from desktop_fixtures import espeak_clip, streamer_env, tiny_model  # noqa: F401

EXTS = (".txt", ".srt", ".vtt", ".jsonl")


def final(i: int, text: str) -> FinalEvent:
    return FinalEvent(audio_time_s=i + 1.0, wall_time_s=0.0, segment_id=i, text=text,
                      words=tuple(Word(w, i + 0.1, i + 0.5) for w in text.split()), start_s=i + 0.1, end_s=i + 0.9)


def finals_in(path) -> list[str]:
    """The final texts a transcript file holds (every line / cue / record must be complete)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return text.splitlines()
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines()]  # a torn line would fail here
        return [r["text"] for r in records if r["type"] == "final" and r["text"]]
    if path.suffix == ".vtt":
        assert text.startswith("WEBVTT\n\n")
        text = text[len("WEBVTT\n\n"):]
    assert text == "" or text.endswith("\n\n"), "a cue was cut off"
    cues = [c for c in text.split("\n\n") if c]
    arrow = re.compile(r"^\d\d:\d\d:\d\d[,.]\d{3} --> \d\d:\d\d:\d\d[,.]\d{3}$")
    out = []
    for n, cue in enumerate(cues, 1):
        lines = cue.split("\n")
        if path.suffix == ".srt":
            assert lines[0] == str(n)
            lines = lines[1:]
        assert arrow.match(lines[0]), cue
        out.append("\n".join(lines[1:]))
    return out


def test_each_final_is_on_disk_before_the_next_event(tmp_path):
    sinks = {ext: open_output(tmp_path / f"t{ext}") for ext in EXTS}
    texts = ["FIRST ONE", "SECOND", "THIRD ONE HERE"]
    for i, text in enumerate(texts):
        for sink in sinks.values():
            sink.handle(PartialEvent(i, 0.0, i, text, "", i, i))
            sink.handle(final(i, text))
            sink.handle(final(i, ""))  # empty finals are not cues
            sink.handle(StatsEvent(i, 0.0, 0.1, 1.0, 0.0, 0))
        for ext in EXTS:  # read while still open: flushed, nothing waits for close()
            assert finals_in(tmp_path / f"t{ext}") == texts[: i + 1]
    for sink in sinks.values():
        sink.close()


@pytest.mark.slow
def test_sigkill_mid_run_keeps_every_final_written_before_it(tmp_path, tiny_model):
    clip = espeak_clip(tmp_path / "five.wav", ["one two three", "four five six", "seven eight nine",
                                               "ten eleven twelve", "thirteen fourteen"], gap_s=1.5)
    outputs = [tmp_path / f"out{ext}" for ext in EXTS]
    cmd = [sys.executable, "-m", "streamer", "--file", str(clip), "--no-tui", "--replay", "realtime",
           "--model", str(tiny_model)]
    for p in outputs:
        cmd += ["--output", str(p)]
    proc = subprocess.Popen(cmd, env=streamer_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep stderr from filling up
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while len(printed) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line.rstrip("\n"))
        assert len(printed) == 2, f"expected two finals before the kill, got {printed}"
        assert proc.poll() is None, "streamer finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()  # whatever it printed before dying
        printed += rest.splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert len(printed) < 5, "the run was not cut short"
    for path in outputs:
        held = finals_in(path)
        # stdout is the first handler: when final k was printed, finals 1..k-1 had passed every sink
        assert held in (printed, printed[:-1]), (path.name, held, printed)
        assert len(held) >= 1


def test_failing_output_does_not_stop_transcription(tmp_path, capsys):
    """An output that fails mid-run (here: a full disk, simulated) is dropped with one error line; the other
    outputs keep every final."""
    import subprocess

    from streamer.cli import main
    from streamer.errors import SinkError
    from streamer.sinks import files

    from helpers import make_tiny_ctc_folder

    model = make_tiny_ctc_folder(tmp_path / "m", "base")
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "One two three. Four five six."], check=True)
    original = files.SrtSink.final

    def full_disk(self, event):
        raise SinkError(f"cannot write to {self.path}: No space left on device")

    files.SrtSink.final = full_disk
    try:
        code = main(["--file", str(wav), "--model", str(model), "--no-tui", "--output", str(tmp_path / "a.srt"),
                     "--output", str(tmp_path / "a.txt")])
    finally:
        files.SrtSink.final = original
    out = capsys.readouterr()
    assert code != 0
    assert out.err.strip().splitlines()[-1].startswith("streamer: error: cannot write to")
    printed = out.out.strip().splitlines()
    assert printed and (tmp_path / "a.txt").read_text().strip().splitlines() == printed
