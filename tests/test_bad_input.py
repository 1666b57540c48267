"""Bad input that used to give a traceback, a hang, a crash or a silent wrong result (issue 31): each case is
one `streamer: error:` line (or one warning line for what was read in part), a non-zero exit and no traceback.
Names from the code under test are imported inside the tests, so each case fails on its own on older code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.cli import main

from desktop_fixtures import REPO, streamer_env
from helpers import make_tiny_ctc_folder

CLIP = REPO / "assets" / "demo_clips" / "demo1_en-us.wav"
SESSION = REPO / "assets" / "demo_clips" / "demo_session.wav"


def one_error(capsys, code: int, *expected: str, exit_code: int = 2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == exit_code, (code, err)
    assert len(err) == 1 and err[0].startswith("streamer: error: "), err
    for e in expected:
        assert e in err[0], err
    return err[0]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the model is loaded: these mistakes must be found before it."""
    import streamer.model

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr(streamer.model, "load_model", refuse)


# -- 1. threads bounded by the usable CPUs ---------------------------------------------------------------------
@pytest.mark.parametrize("threads", ["99999", "10000"])
def test_threads_beyond_the_cpus_is_one_line(threads, capsys, no_model_load):
    code = main(["--file", str(CLIP), "--model", "demo", "--threads", threads, "--no-tui"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    one_error(capsys, code, f"--threads {threads}", f"{cpus} CPU", f"use 1 to {cpus}")


def test_threads_bound_in_the_library_too():
    from streamer.core.config import ModelConfig
    from streamer.errors import ConfigError
    from streamer.model import load_model

    with pytest.raises(ConfigError, match="CPU"):
        load_model(ModelConfig(name="demo", threads=99999))


# -- 2. NaN / infinity and the frame grid --------------------------------------------------------------------
@pytest.mark.parametrize("args,expected", [
    (["--max-segment-s", "nan"], "finite"),
    (["--max-segment-s", "inf"], "finite"),
    (["--final-pass-max-s", "nan"], "finite"),
    (["--final-pass-max-s=-inf"], "finite"),
    (["--hotword-weight", "nan"], "finite"),
    (["--hop-ms", "7"], "--hop-ms 7 is not a multiple of the model's 20 ms frame (use 20)"),
    (["--hop-ms", "170"], "use 160 or 180"),
    (["--lookahead-ms", "330"], "--lookahead-ms 330 is not a multiple of the model's 20 ms frame (use 320 or 340)"),
])
def test_non_finite_and_off_grid_values_are_one_line(args, expected, capsys, no_model_load):
    code = main(["--file", str(CLIP), "--model", "demo", "--no-tui", *args])
    one_error(capsys, code, expected)


def test_config_validate_refuses_nan_and_infinity():
    from streamer.core.config import BufferConfig, VadConfig, WindowConfig
    from streamer.errors import ConfigError

    for bad in (VadConfig(max_segment_s=float("nan")), VadConfig(confirm_threshold=float("nan")),
                WindowConfig(final_pass_max_s=float("inf")), BufferConfig(ring_capacity_s=float("nan"))):
        with pytest.raises(ConfigError, match="finite"):
            bad.validate()


def test_window_grid_is_checked_against_the_loaded_models_frame(monkeypatch, capsys):
    """After loading, the hop is checked against the model's own frame (here a model with 40 ms frames)."""
    from streamer.core.windowing import FrameGeometry
    from streamer.model import inference

    real = FrameGeometry.from_conv

    def forty_ms(kernels, strides, rate):
        g = real(kernels, strides, rate)
        return FrameGeometry(g.stride_samples * 2, g.receptive_field_samples, g.sample_rate)

    monkeypatch.setattr(inference.FrameGeometry, "from_conv", staticmethod(forty_ms))
    code = main(["--file", str(CLIP), "--model", "demo", "--no-tui", "--hop-ms", "180"])
    one_error(capsys, code, "--hop-ms 180 is not a multiple of the model's 40 ms frame (use 160 or 200)")


# -- 9. hotwords ---------------------------------------------------------------------------------------------
def test_hotwords_split_on_commas_and_repeat(capsys):
    from streamer.cli.args import build_parser, run_options
    from streamer.core.config import Config

    args = build_parser().parse_args(["--hotwords", "alpha, beta", "--hotwords", "gamma delta"])
    opts = run_options(args, Config(), tui=False)
    assert opts.decoder.hotwords == ("alpha", "beta", "gamma delta")


@pytest.mark.parametrize("value", ["", "alpha,,beta", " , "])
def test_an_empty_hotword_is_an_error(value, capsys, no_model_load):
    code = main(["--file", str(CLIP), "--model", "demo", "--no-tui", "--hotwords", value])
    one_error(capsys, code, "empty hotword")


# -- 10. exit codes documented ---------------------------------------------------------------------------------
def test_help_lists_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in out, out


# -- 4. model folders ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return make_tiny_ctc_folder(tmp_path_factory.mktemp("models") / "good", "base")


def broken_copy(good: Path, tmp: Path, what: str) -> tuple[Path, str]:
    d = tmp / what
    shutil.copytree(good, d)
    if what == "truncated-weights":
        w = d / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        return d, f"{w} is damaged or incomplete"
    if what == "wrong-type":
        cfg = json.loads((d / "config.json").read_text())
        cfg["hidden_size"] = "thirty-two"
        (d / "config.json").write_text(json.dumps(cfg))
        return d, f"{d / 'config.json'} is not a valid model config: Field 'hidden_size' expected int"
    if what == "empty-vocabulary":
        (d / "vocab.json").write_text("{}")
        return d, "has no tokens besides the special ones"
    if what == "pickle":
        import pickle

        (d / "model.safetensors").unlink()
        (d / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": Path("not a tensor")}))
        return d, f"{d / 'pytorch_model.bin'} is a pickle checkpoint holding more than tensors"
    raise ValueError(what)


@pytest.mark.parametrize("what", ["truncated-weights", "wrong-type", "empty-vocabulary", "pickle"])
def test_broken_model_folder_is_one_line_naming_the_file(what, good_model, tmp_path, capsys):
    folder, expected = broken_copy(good_model, tmp_path, what)
    for mode in ([], ["--offline"]):
        code = main(["--file", str(CLIP), "--model", str(folder), "--no-tui", *mode])
        one_error(capsys, code, expected)


@pytest.mark.parametrize("error", ["MemoryError", "OutOfMemoryError", "RuntimeError"])
def test_offline_out_of_memory_is_one_line(error, good_model, monkeypatch, capsys):
    import torch

    import streamer.model

    exc = {"MemoryError": MemoryError(), "OutOfMemoryError": torch.OutOfMemoryError("CUDA out of memory."),
           "RuntimeError": RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                        "memory: you tried to allocate 1099511627776 bytes")}[error]

    def oom(*_a, **_k):
        raise exc

    monkeypatch.setattr(streamer.model, "reference_decode", oom)
    code = main(["--file", str(CLIP), "--model", str(good_model), "--offline"])
    one_error(capsys, code, f"out of memory decoding {CLIP}", "drop --offline")


# -- 6 / 8. outputs: checked before the model loads; links; private new files ------------------------------------
def test_unwritable_output_is_found_before_the_model_loads(tmp_path, capsys, no_model_load):
    (tmp_path / "a-file").write_text("x")
    code = main(["--file", str(CLIP), "--model", "demo", "--no-tui", "--output", str(tmp_path / "a-file" / "t.txt")])
    one_error(capsys, code, f"cannot write output file {tmp_path / 'a-file' / 't.txt'}", "is not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_found_before_the_model_loads(tmp_path, capsys, no_model_load):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code = main(["--file", str(CLIP), "--model", "demo", "--no-tui", "--output", str(ro / "t.txt")])
    one_error(capsys, code, "not writable")


def test_existing_output_is_probed_without_being_changed(tmp_path):
    from streamer.sinks.files import check_output_path

    p = tmp_path / "t.txt"
    p.write_text("")
    p.chmod(0o644)
    before = p.stat()
    check_output_path(p)
    assert p.read_text() == "" and p.stat().st_mode == before.st_mode


def test_dangling_link_is_refused_unless_overwrite(tmp_path, capsys, no_model_load):
    link = tmp_path / "shared.txt"
    target = tmp_path / "elsewhere" / "planted.txt"
    target.parent.mkdir()
    link.symlink_to(target)
    code = main(["--file", str(CLIP), "--model", "demo", "--no-tui", "--output", str(link)])
    one_error(capsys, code, f"output path {link} is a symbolic link to {target}, which does not exist", "--overwrite")
    assert not target.exists()


def test_dangling_link_is_followed_with_overwrite(tmp_path, capsys):
    from streamer.core.events import FinalEvent
    from streamer.sinks.files import open_output

    link = tmp_path / "shared.txt"
    target = tmp_path / "planted.txt"
    link.symlink_to(target)
    sink = open_output(link, overwrite=True)
    sink.handle(FinalEvent(audio_time_s=1.0, wall_time_s=0.0, segment_id=0, text="HELLO", words=(), start_s=0.0,
                           end_s=1.0))
    sink.close()
    assert target.read_text() == "HELLO\n"


def test_new_outputs_are_private_and_existing_ones_keep_their_mode(tmp_path):
    from streamer.sinks.files import open_output

    old = os.umask(0o022)
    try:
        for ext in (".txt", ".srt", ".vtt", ".jsonl"):
            new = tmp_path / f"new{ext}"
            open_output(new).close()
            assert stat.S_IMODE(new.stat().st_mode) == 0o600, ext
        existing = tmp_path / "existing.txt"
        existing.write_text("")
        existing.chmod(0o644)
        open_output(existing).close()
        assert stat.S_IMODE(existing.stat().st_mode) == 0o644
    finally:
        os.umask(old)


# -- 5. truncated files, a file at 1 Hz ----------------------------------------------------------------------
def noise_file(path: Path, rate: int = 48000, seconds: float = 3.0, **kw) -> Path:
    x = np.random.default_rng(0).normal(0, 0.1, int(rate * seconds)).astype(np.float32)
    sf.write(path, x, rate, **kw)
    return path


def cut(path: Path, fraction: float = 0.5) -> Path:
    out = path.with_name("cut-" + path.name)
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_truncated_file_is_read_as_far_as_it_goes_and_says_so(fmt, tmp_path):
    from streamer.audio.files import open_audio

    trunc = cut(noise_file(tmp_path / f"x.{fmt}"))
    inp = open_audio(trunc)
    audio = inp.read_16k()
    assert 0.5 * 16000 < len(audio) < 2.0 * 16000
    assert inp.shortfall is not None and "truncated" in inp.shortfall or "stopped at" in inp.shortfall
    assert str(trunc) in inp.shortfall
    full = open_audio(tmp_path / f"x.{fmt}")
    assert len(full.read_16k()) == 48000 and full.shortfall is None


def test_truncated_wav_through_the_cli_warns_and_exits_1(tmp_path, capsys):
    data, rate = sf.read(SESSION, dtype="float32")
    whole = tmp_path / "session.wav"
    sf.write(whole, data[: rate * 9], rate, subtype="PCM_16")
    trunc = cut(whole, 0.5)
    out = tmp_path / "t.txt"
    code = main(["--file", str(trunc), "--model", "demo", "--no-tui", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    err = captured.err.strip().splitlines()
    assert err == [f"streamer: warning: {trunc} is truncated: 4.50 s of audio read of the 9.00 s its header "
                   "promises; the transcript covers what was read"]
    assert captured.out.strip() and out.read_text().strip() == captured.out.strip()
    code = main(["--file", str(trunc), "--model", "demo", "--offline"])
    captured = capsys.readouterr()
    assert code == 1 and "is truncated" in captured.err and captured.out.strip()


def test_undecodable_truncated_ogg_is_an_error(tmp_path, capsys, no_model_load):
    t = np.arange(48000 * 3) / 48000
    path = tmp_path / "tone.ogg"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    code = main(["--file", str(cut(path)), "--model", "demo", "--no-tui"])
    one_error(capsys, code, "cannot decode any audio", "truncated")


@pytest.mark.parametrize("rate", [1, 4000])
def test_sample_rate_below_8000_is_refused(rate, tmp_path, capsys, no_model_load):
    path = tmp_path / "low.wav"
    sf.write(path, np.zeros(rate * 2, np.float32), rate)
    code = main(["--file", str(path), "--model", "demo", "--no-tui"])
    one_error(capsys, code, f"sampled at {rate} Hz, below the 8000 Hz")


# -- 7. raw messages from lower layers ---------------------------------------------------------------------------
def test_lower_layer_boilerplate_is_not_the_message():
    from streamer.audio.files import _describe_error

    assert _describe_error(RuntimeError("Error opening 'x.wav': System error.")) == "the data could not be decoded"
    assert _describe_error(RuntimeError("Error opening <_io.BufferedReader name='x'>: Format not recognised.")) == \
        "Format not recognised."
    assert _describe_error(PermissionError(13, "Permission denied")) == "Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_names_the_file(tmp_path, capsys, no_model_load):
    path = noise_file(tmp_path / "locked.wav")
    path.chmod(0)
    code = main(["--file", str(path), "--model", "demo", "--no-tui"])
    one_error(capsys, code, str(path), "Permission denied")


# -- 3. FIFOs and standard input: read once, as a stream -----------------------------------------------------------
def test_a_fifo_is_read_once_as_a_stream(tmp_path):
    from streamer.audio.files import open_audio

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    payload = CLIP.read_bytes()

    def feed():
        with open(fifo, "wb") as f:
            for i in range(0, len(payload), 4096):
                f.write(payload[i:i + 4096])

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    inp = open_audio(fifo)
    audio = inp.read_16k()
    feeder.join(10)
    expected = open_audio(CLIP).read_16k()
    np.testing.assert_allclose(audio, expected, atol=1e-4)
    assert inp.shortfall is None and inp.info.frames == sf.info(CLIP).frames


def test_a_fifo_through_the_cli(tmp_path, capsys):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(CLIP.read_bytes()), daemon=True)
    feeder.start()
    assert main(["--file", str(fifo), "--model", "demo", "--no-tui"]) == 0
    feeder.join(10)
    from_fifo = capsys.readouterr().out
    assert main(["--file", str(CLIP), "--model", "demo", "--no-tui"]) == 0
    assert from_fifo.strip() and from_fifo == capsys.readouterr().out


def test_wav_stream_formats_decode_like_soundfile(tmp_path):
    """The forward-only WAV reader (pipes) against soundfile, for the PCM formats ffmpeg and sox write."""
    import io

    from streamer.audio.files import _open_stream

    rng = np.random.default_rng(1)
    x = np.clip(rng.normal(0, 0.2, (4000, 2)), -0.99, 0.99).astype(np.float32)
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        buf = io.BytesIO()
        sf.write(buf, x, 22050, format="WAV", subtype=subtype)
        expected, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32", always_2d=True)
        stream = io.BufferedReader(io.BytesIO(buf.getvalue()))  # type: ignore[arg-type]
        inp = _open_stream(stream, Path("-"), "standard input", None, 333, close=False)
        got = np.concatenate(list(inp.blocks()))
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=subtype)
        assert inp.shortfall is None


def stream_cli(args: list[str], data: bytes, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer", "--model", "demo", "--no-tui", *args], input=data,
                          capture_output=True, cwd=tmp, env=streamer_env(tmp), timeout=180)


@pytest.mark.slow
def test_standard_input_wav_and_raw(tmp_path):
    """`... | streamer --file -`: a WAV stream (its header's sizes unknown, as ffmpeg writes to a pipe) and raw
    16-bit PCM (--raw-rate) give the same finals as the file."""
    from_file = stream_cli(["--file", str(CLIP)], b"", tmp_path)
    assert from_file.returncode == 0 and from_file.stdout.strip()
    wav = bytearray(CLIP.read_bytes())
    data_at = wav.index(b"data")
    wav[4:8] = b"\xff\xff\xff\xff"
    wav[data_at + 4:data_at + 8] = b"\xff\xff\xff\xff"  # a stream without its length
    r = stream_cli(["--file", "-"], bytes(wav), tmp_path)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout == from_file.stdout
    x, rate = sf.read(CLIP, dtype="int16")
    r = stream_cli(["--file", "-", "--raw-rate", str(rate)], x.tobytes(), tmp_path)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout == from_file.stdout
    r = stream_cli(["--file", "-", "--raw-rate", str(rate), "--raw-channels", "2"],
                   np.stack([x, x], axis=1).tobytes(), tmp_path)
    assert r.returncode == 0 and r.stdout == from_file.stdout
    r = stream_cli(["--file", "-"], b"", tmp_path)
    assert r.returncode == 2 and r.stderr.decode().strip().splitlines() == [
        "streamer: error: standard input is empty: no audio arrived (send WAV (e.g. ffmpeg ... -f wav -) or raw PCM "
        "with --raw-rate)"]


# -- 10. exit code 130 for an interrupted file run ----------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_on_a_file_run_exits_130_with_the_outputs_written(tmp_path):
    out = tmp_path / "t.txt"
    p = subprocess.Popen([sys.executable, "-m", "streamer", "--model", "demo", "--no-tui", "--file", str(SESSION),
                          "--replay", "realtime", "--output", str(out)], cwd=tmp_path, env=streamer_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                         # SIGINT as at a terminal: a background job (CI) inherits it ignored
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and out.read_text().strip()):
        time.sleep(0.1)  # polling for the first final (a condition, not a fixed wait)
    assert out.read_text().strip(), "no final within the deadline"
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("streamer: interrupted after ")
    assert out.read_text().splitlines() == stdout.splitlines()
