"""Failures at the edges that must not cost the transcript: standard output closed early or full, an output
file on a full disk, a non-finite sample in the input, and the terminal closed (SIGHUP)."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.resample import StreamingResampler
from streamer.core.events import FinalEvent, PartialEvent, Word
from streamer.errors import SinkError
from streamer.sinks import files
from streamer.sinks.files import open_output
from test_outputs import EXTS, finals_in

from desktop_fixtures import REPO, streamer_env, wait_for

DEMO_SESSION = REPO / "assets" / "demo_clips" / "demo_session.wav"
DEMO_CLIP = REPO / "assets" / "demo_clips" / "demo1_en-us.wav"
#: The first two utterances of the demo session (speech ends at 6.99 s), so a paced replay takes 8 s.
TWO_UTTERANCES_S = 8.0


def final(i: int, text: str) -> FinalEvent:
    return FinalEvent(audio_time_s=i + 1.0, wall_time_s=0.0, segment_id=i, text=text,
                      words=tuple(Word(w, i + 0.1, i + 0.5) for w in text.split()), start_s=i + 0.1, end_s=i + 0.9)


# -- a full disk under an output file (the sinks directly) ------------------------------------------------------
class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: a write beyond it stores what fits, the next one fails."""

    def __init__(self, path: str, mode: str, room: int) -> None:
        super().__init__(path, mode.replace("b", "").replace("t", "") or "w")
        self.room = room

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data)
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        part = data[:self.room]
        self.room -= len(part)
        return super().write(part)


def full_disk_open(room: int):
    def fake_open(path, mode="r", buffering=-1, encoding=None, errors=None, newline=None):
        raw = FullDisk(str(path), mode, room)
        if "b" in mode:
            return raw
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, errors=errors, newline=newline)
    return fake_open


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize("room", [0, 5, 40, 75])
def test_full_disk_keeps_complete_records_and_close_does_not_raise(tmp_path, monkeypatch, ext, room):
    """Whatever fits before the disk fills, the file ends with a complete line / cue / record, the failure is
    one SinkError naming the file, and neither later events nor close() raise anything else."""
    monkeypatch.setattr(files, "open", full_disk_open(room), raising=False)
    path = tmp_path / f"t{ext}"
    texts = ["THE FIRST FINAL OF THIS RUN", "AND A SECOND ONE", "THE THIRD ONE HERE", "A FOURTH FINAL",
             "FIFTH AND LAST"]
    try:
        sink = open_output(path)
    except SinkError as exc:  # the .vtt header did not fit
        assert str(path) in exc.one_line() and "No space left on device" in exc.one_line()
        return
    error = None
    for i, text in enumerate(texts):
        try:
            sink.handle(PartialEvent(i, 0.0, i, text, "", i, i))
            sink.handle(final(i, text))
        except SinkError as exc:
            error = exc
            break  # the worker removes a sink that raised
    sink.close()
    sink.close()
    assert error is not None, "the disk never filled"
    assert str(path) in error.one_line() and "No space left on device" in error.one_line()
    held = finals_in(path)  # every record complete (finals_in asserts it)
    assert held == texts[:len(held)]


@pytest.mark.slow
def test_output_on_a_full_disk_is_one_line_and_the_others_are_complete(tmp_path):
    """--output on a full disk (a link to /dev/full): one error line naming it, no traceback, a non-zero
    exit, and the other output and stdout have every final."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    full = tmp_path / "full.srt"
    full.symlink_to("/dev/full")
    ok = tmp_path / "ok.txt"
    run = streamer(["--file", str(DEMO_CLIP), "--output", str(full), "--output", str(ok)], tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [f"streamer: error: cannot write to {full}: No space left on device "
                                       "(free disk space or choose another --output path)"]
    printed = run.stdout.splitlines()
    assert printed and ok.read_text(encoding="utf-8").splitlines() == printed


# -- standard output closed early or full ----------------------------------------------------------------------
def streamer(args: list[str], tmp: Path, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "streamer", "--model", "demo", "--no-tui", *args], cwd=tmp,
                          env=streamer_env(tmp), stderr=subprocess.PIPE, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def two_utterances(tmp_path_factory) -> Path:
    import soundfile as sf

    x, rate = sf.read(DEMO_SESSION, dtype="float32")
    path = tmp_path_factory.mktemp("clip") / "two.wav"
    sf.write(path, x[: int(TWO_UTTERANCES_S * rate)], rate)
    return path


@pytest.fixture(scope="module")
def normal_outputs(two_utterances, tmp_path_factory) -> dict[str, str]:
    """What a run with a working stdout writes: the finals on stdout and in each output file."""
    tmp = tmp_path_factory.mktemp("normal")
    run = streamer(["--file", str(two_utterances), "--output", str(tmp / "out.txt"),
                    "--output", str(tmp / "out.srt")], tmp)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 2, run.stdout
    return {"stdout": run.stdout, "txt": (tmp / "out.txt").read_text(), "srt": (tmp / "out.srt").read_text()}


def assert_only_the_stdout_warning(stderr: str, why: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: warning: standard output "), stderr
    assert f"({why}); the other outputs go on" in lines[0]


@pytest.mark.slow
def test_stdout_closed_early_drops_stdout_and_writes_every_final(two_utterances, normal_outputs, tmp_path):
    """`streamer ... | head -1`: the reader goes after the first final; the later final still reaches every
    output file, one warning line says so, and the exit code is 1 (standard output failed)."""
    cmd = [sys.executable, "-m", "streamer", "--model", "demo", "--no-tui", "--file", str(two_utterances),
           "--replay", "realtime", "--output", str(tmp_path / "out.txt"), "--output", str(tmp_path / "out.srt")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=streamer_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        first = proc.stdout.readline()
        assert first == normal_outputs["stdout"].splitlines(keepends=True)[0]
        proc.stdout.close()  # like head -1: the second final (paced, seconds later) meets a closed pipe
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert rc == 1, err
    assert_only_the_stdout_warning(err[0], "Broken pipe")
    assert (tmp_path / "out.txt").read_text() == normal_outputs["txt"]
    assert (tmp_path / "out.srt").read_text() == normal_outputs["srt"]


@pytest.mark.slow
def test_stdout_on_a_full_disk_drops_stdout_and_writes_every_final(two_utterances, normal_outputs, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        run = streamer(["--file", str(two_utterances), "--output", str(tmp_path / "out.txt"),
                        "--output", str(tmp_path / "out.srt")], tmp_path, stdout=full)
    assert run.returncode == 1, run.stderr
    assert_only_the_stdout_warning(run.stderr, "No space left on device")
    assert (tmp_path / "out.txt").read_text() == normal_outputs["txt"]
    assert (tmp_path / "out.srt").read_text() == normal_outputs["srt"]


# -- non-finite samples ----------------------------------------------------------------------------------------
def test_resampler_zeroes_and_counts_nonfinite_samples():
    for rate in (16000, 48000):
        r = StreamingResampler(rate, 16000)
        block = np.full((960, 2), 0.1, np.float32)
        block[10, 0] = np.nan
        block[20, 1] = np.inf
        block[30] = -np.inf
        out = np.concatenate([r.process(block), r.process(block[:, :1]), r.flush()])
        assert np.isfinite(out).all()
        assert r.nonfinite_samples == 4 + 2
        assert block[10, 0] != block[10, 0], "the caller's block was changed"


@pytest.mark.slow
def test_one_nan_sample_does_not_erase_the_utterance(tmp_path):
    """A float WAV of the demo clip with one NaN in the loudest part of its speech: the final is the same as
    without it, and one warning line at the end says how many samples were zeroed."""
    import soundfile as sf

    x, rate = sf.read(DEMO_CLIP, dtype="float32")
    clean, broken = tmp_path / "clean.wav", tmp_path / "nan.wav"
    sf.write(clean, x, rate, subtype="FLOAT")
    x[int(np.argmax(np.abs(x)))] = np.nan
    x[len(x) // 2] = np.inf
    sf.write(broken, x, rate, subtype="FLOAT")
    expected = streamer(["--file", str(clean)], tmp_path)
    assert expected.returncode == 0 and expected.stdout.strip(), expected.stderr
    run = streamer(["--file", str(broken), "--output", str(tmp_path / "out.jsonl")], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected.stdout
    assert run.stderr.splitlines() == ["streamer: warning: 2 non-finite input samples (NaN or Inf) replaced "
                                       "with silence"]
    import json

    stats = [e for e in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines()) if e["type"] == "stats"]
    assert stats and stats[-1]["nonfinite_samples"] == 2


# -- SIGHUP ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sighup_finalises_the_utterance_in_progress(two_utterances, normal_outputs, tmp_path):
    """The terminal closed (SIGHUP) while the second utterance is being spoken: like SIGTERM
    (tests/test_capture.py::test_sigterm_mid_speech_flushes_the_pending_segment), the open utterance becomes
    a final in every output and the exit code is 0."""
    import json

    out_txt, out_jsonl = tmp_path / "x.txt", tmp_path / "x.jsonl"
    cmd = [sys.executable, "-m", "streamer", "--model", "demo", "--no-tui", "--file", str(two_utterances),
           "--replay", "realtime", "--output", str(out_txt), "--output", str(out_jsonl)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=streamer_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def events() -> list[dict]:
        lines = out_jsonl.read_text().splitlines() if out_jsonl.exists() else []
        return [json.loads(line) for line in lines if line.endswith("}")]

    def second_utterance_started() -> bool:
        finals = [e for e in events() if e["type"] == "final" and e["text"]]
        return bool(finals) and any(e["type"] == "partial" and e["segment_id"] > finals[0]["segment_id"]
                                    and e["committed_text"] for e in events())

    try:
        assert wait_for(second_utterance_started, timeout_s=60), "no partial of the second utterance"
        assert proc.poll() is None, "the replay ended before the signal"
        proc.send_signal(signal.SIGHUP)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    held = out_txt.read_text().splitlines()
    first = normal_outputs["txt"].splitlines()[0]
    assert len(held) == 2 and held[0] == first and held[1], held
    assert stdout.splitlines() == held
    finals = [e for e in events() if e["type"] == "final" and e["text"]]
    last_partial = [e for e in events() if e["type"] == "partial"][-1]
    assert finals[-1]["segment_id"] == last_partial["segment_id"]
    assert finals[-1]["end_s"] < 6.99, "the utterance ran to its end: the signal came too late to tell"
