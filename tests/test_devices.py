"""Device listing and lookup: `--list-devices` and `--input-device` against a real PortAudio through a
PulseAudio virtual microphone, plus the lookup rules on plain device lists."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.audio.devices import InputDevice, check_settings, list_input_devices, resolve_input_device
from streamer.errors import AudioDeviceError

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None):
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL, cwd=ROOT)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamer: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# -- real PortAudio through the virtual microphone --------------------------------------------------------
@pytest.mark.slow
@pytest.mark.audio
def test_list_devices_table(virtual_mic):
    r = run_cli("--list-devices")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    lines = lines[: lines.index(next(line for line in lines if line.startswith("(* default"))) + 1]  # then monitors
    assert lines[0].split() == ["#", "name", "host", "API", "in", "ch", "rate", "Hz"]
    rows = {line[2:].split()[1]: line for line in lines[1:-1]}
    assert {"pulse", "default"} <= set(rows)
    for name in ("pulse", "default"):
        index, _, api, channels, rate = rows[name][2:].split()
        assert api == "ALSA" and int(channels) > 0 and int(rate) == 44100  # the null sink runs at 44.1 kHz
    assert rows["default"].startswith("*") and not rows["pulse"].startswith("*")
    assert sum(line.startswith("*") for line in lines) == 1
    assert "--input-device" in lines[-1]


@pytest.mark.slow
@pytest.mark.audio
def test_list_devices_in_process_matches_cli(virtual_mic):
    devices = list_input_devices()
    assert [d.name for d in devices if d.is_default] == ["default"]
    assert all(isinstance(d.index, int) and d.input_channels > 0 for d in devices)


@pytest.mark.slow
@pytest.mark.audio
def test_unknown_input_device_is_one_line_listing_candidates(virtual_mic):
    # --model points nowhere: the device is checked before the model would be loaded.
    r = run_cli("--input-device", "no such mic", "--model", "/nonexistent/model", "--no-tui")
    assert r.returncode == 2
    line = one_error_line(r)
    assert "no input device matches 'no such mic'" in line
    assert "[0] pulse" in line and "[1] default" in line


@pytest.mark.slow
@pytest.mark.audio
def test_ambiguous_input_device_lists_the_matches(virtual_mic):
    r = run_cli("--input-device", "UL", "--model", "/nonexistent/model", "--no-tui")  # pULse, defaULt
    assert r.returncode == 2
    line = one_error_line(r)
    assert "2 input devices match 'UL'" in line and "[0] pulse; [1] default" in line


@pytest.mark.slow
@pytest.mark.audio
def test_input_device_index_that_is_not_an_input(virtual_mic):
    r = run_cli("--input-device", "99", "--model", "/nonexistent/model", "--no-tui")
    assert r.returncode == 2
    assert "no input device with index 99" in one_error_line(r)


@pytest.mark.slow
@pytest.mark.audio
def test_unsupported_sample_rate_names_the_device(virtual_mic):
    device = resolve_input_device("pulse")
    with pytest.raises(AudioDeviceError) as err:
        check_settings(device, sample_rate_hz=1_000_000)
    line = err.value.one_line()
    assert "[0] pulse" in line and "1000000 Hz" in line and "sample rate" in line.lower()


@pytest.mark.slow
def test_no_sound_server_means_no_devices(tmp_path):
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(tmp_path))  # a server that is not there
    env.pop("PULSE_SERVER", None)
    r = run_cli("--list-devices", env=env)
    if r.returncode == 0:
        pytest.skip("this machine has audio hardware besides PulseAudio")
    assert r.returncode == 1 and r.stdout.startswith("no audio input devices found"), r.stdout + r.stderr
    r = run_cli("--model", "/nonexistent/model", "--no-tui", env=env)
    assert r.returncode == 2
    assert "no audio input device found" in one_error_line(r)


# -- the lookup rules (pure) ----------------------------------------------------------------------------
DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "ALSA", 2, 44100, False),
    InputDevice(3, "USB Audio Device: Mic (hw:1,0)", "ALSA", 1, 48000, False),
    InputDevice(7, "pulse", "ALSA", 32, 44100, False),
    InputDevice(8, "pulse monitor", "ALSA", 32, 44100, False),
    InputDevice(9, "default", "ALSA", 32, 44100, True),
]


@pytest.mark.parametrize("spec, index", [(None, 9), ("", 9), ("3", 3), ("usb", 3), ("ALC3246", 0),
                                         ("pulse", 7), ("PULSE", 7), ("monitor", 8), (" 7 ", 7)])
def test_resolve(spec, index):
    assert resolve_input_device(spec, DEVICES).index == index


@pytest.mark.parametrize("spec, message", [
    ("hw:", "2 input devices match 'hw:'"),
    ("4", "no input device with index 4"),
    ("bluetooth", "no input device matches 'bluetooth'"),
])
def test_resolve_errors(spec, message):
    with pytest.raises(AudioDeviceError) as err:
        resolve_input_device(spec, DEVICES)
    line = err.value.one_line()
    assert message in line and "\n" not in line


def test_no_default_device_asks_for_one():
    with pytest.raises(AudioDeviceError, match="no default audio input device"):
        resolve_input_device(None, [InputDevice(1, "mic", "ALSA", 1, 48000, False)])
