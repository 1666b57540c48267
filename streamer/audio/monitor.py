"""Desktop audio: what the default output device plays, recorded from that device's monitor (loopback).

Linux (PulseAudio, or PipeWire through pipewire-pulse): every sink (output device) has a monitor source that
carries what it plays. pulsectl (the `desktop` extra) asks the sound server for the default sink when
capture starts and lists the monitors; the audio itself is recorded by the same PortAudio path as the
microphone (streamer.audio.capture), through ALSA's `pulse` device, pointed at the monitor by PULSE_SOURCE
while that one stream opens (libpulse reads it once per connection: the microphone and the desktop are
recorded side by side in one process). Nothing is played back.

While it records, a SinkWatch asks the server every SINK_POLL_S whether the captured sink is still there:
when it goes away PulseAudio would move the recording to another source (the microphone, as likely as not),
so capture ends instead with one line naming the sink (streamer.audio.capture.Capture.fail).

Windows and macOS have no monitor sources: a WASAPI loopback input that PortAudio lists ("[Loopback]" in its
name) or a loopback driver (BlackHole, Loopback, Soundflower) is picked when there is one; otherwise one line
says what to install or which device to pick.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from streamer.audio.devices import InputDevice
from streamer.errors import AudioDeviceError, StreamerError, require

log = logging.getLogger(__name__)

#: How often the sound server is asked whether the captured output device is still there.
SINK_POLL_S = 0.25
#: How long to wait for the sound server to answer when connecting.
CONNECT_TIMEOUT_S = 3.0
#: PortAudio's ALSA device that records through the sound server (libasound2-plugins).
PULSE_DEVICE = "pulse"
#: Input names of loopback drivers on macOS (and VB-CABLE / Stereo Mix on Windows), found by substring.
LOOPBACK_NAMES = ("[Loopback]", "BlackHole", "Loopback Audio", "Soundflower", "Stereo Mix", "CABLE Output")

NO_SERVER_HINT = ("desktop audio is recorded from the sound server: start PulseAudio or PipeWire "
                  "(systemctl --user start pipewire-pulse, or pulseaudio --start), or pick an input with "
                  "--input-device (see streamer --list-devices)")

_env_lock = threading.Lock()


@dataclass(frozen=True)
class MonitorSource:
    """A sink's monitor source as the sound server lists it."""

    name: str  # the source name, e.g. alsa_output.pci-0000_00_1f.3.analog-stereo.monitor
    description: str  # e.g. "Monitor of Built-in Audio Analog Stereo"
    sink_name: str
    sink_description: str
    rate_hz: int
    channels: int
    #: The monitor of the default sink (what the desktop plays now).
    default_output: bool


def pulsectl_module():
    return require("pulsectl", "desktop")


@contextmanager
def pulse_client(name: str = "streamer") -> Iterator:
    """A pulsectl connection to the sound server, or one line saying there is none."""
    pulsectl = pulsectl_module()
    try:
        client = pulsectl.Pulse(name, connect=False)
    except Exception as exc:  # libpulse missing (pulsectl loads it with ctypes)
        raise AudioDeviceError(f"cannot use the PulseAudio client library: {exc}",
                               "install it (Debian/Ubuntu: apt install libpulse0)") from exc
    try:
        try:
            client.connect(timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # pulsectl.PulseError: refused, no socket, timed out
            raise AudioDeviceError(f"no PulseAudio/PipeWire sound server is running ({exc})", NO_SERVER_HINT) from exc
        yield client
    finally:
        client.close()


def list_monitors() -> list[MonitorSource]:
    """Every sink's monitor source, the default sink's marked (raises AudioDeviceError without a server)."""
    with pulse_client() as pulse:
        info = pulse.server_info()
        sinks = {s.index: s for s in pulse.sink_list()}
        out = []
        for source in pulse.source_list():
            sink = sinks.get(source.monitor_of_sink)
            if sink is None:  # not a monitor (a microphone), or its sink is already gone
                continue
            out.append(MonitorSource(name=source.name, description=source.description, sink_name=sink.name,
                                     sink_description=sink.description, rate_hz=int(source.sample_spec.rate),
                                     channels=int(source.channel_count),
                                     default_output=sink.name == info.default_sink_name))
        return out


def default_monitor(monitors: list[MonitorSource] | None = None) -> MonitorSource:
    """The monitor of the default output device, resolved now."""
    monitors = list_monitors() if monitors is None else monitors
    found = next((m for m in monitors if m.default_output), None)
    if found is not None:
        return found
    if not monitors:
        raise AudioDeviceError("the sound server has no output device, so there is no desktop audio to record",
                               "connect or enable an output device (pactl list short sinks), or use --input-device")
    raise AudioDeviceError("the sound server has no default output device",
                           "set one (pactl set-default-sink NAME) or pick a monitor with --input-device: "
                           + "; ".join(m.name for m in monitors))


def monitor_devices(devices: list[InputDevice]) -> list[InputDevice]:
    """The monitors as input devices: PortAudio's `pulse` device, pointed at each monitor source. Empty when
    there is no sound server, no pulsectl or no `pulse` device (the caller lists the PortAudio devices alone)."""
    pulse = next((d for d in devices if d.name == PULSE_DEVICE), None)
    if pulse is None or not sys.platform.startswith("linux"):
        return []
    try:
        monitors = list_monitors()
    except StreamerError:  # no server, or pulsectl not installed: the PortAudio devices alone
        return []
    return [as_device(m, pulse) for m in monitors]


def as_device(monitor: MonitorSource, pulse: InputDevice) -> InputDevice:
    return replace(pulse, name=monitor.description, input_channels=monitor.channels, default_rate_hz=monitor.rate_hz,
                   is_default=False, pulse_source=monitor.name, monitor_of=monitor.sink_name,
                   default_output=monitor.default_output)


def resolve_desktop_device(devices: list[InputDevice], platform: str = sys.platform) -> InputDevice:
    """`--desktop`: the default output device's monitor (Linux), a loopback input (Windows, macOS), or one
    line saying what to install or which device to pick."""
    if platform.startswith("linux"):
        pulse = next((d for d in devices if d.name == PULSE_DEVICE), None)
        monitor = default_monitor()  # no server, no pulsectl: one line before PortAudio is asked
        if pulse is None:
            raise AudioDeviceError("PortAudio has no 'pulse' input, through which desktop audio is recorded",
                                   "install the ALSA plugin for PulseAudio/PipeWire (Debian/Ubuntu: apt install "
                                   "libasound2-plugins), then check streamer --list-devices")
        return as_device(monitor, pulse)
    loopback = [d for d in devices if any(n.casefold() in d.name.casefold() for n in LOOPBACK_NAMES)]
    if loopback:
        return loopback[0]
    if platform == "darwin":
        raise AudioDeviceError("macOS has no loopback input for desktop audio",
                               "install a loopback driver (brew install blackhole-2ch), send the output to it "
                               "(a Multi-Output Device in Audio MIDI Setup), then run streamer --desktop again "
                               "or pick it with --input-device BlackHole")
    if platform == "win32":
        raise AudioDeviceError("no WASAPI loopback input is listed by PortAudio",
                               "enable 'Stereo Mix' in the Sound control panel (Recording tab) or install a "
                               "virtual cable (VB-CABLE), then pick it with --input-device (see streamer --list-devices)")
    raise AudioDeviceError(f"desktop audio capture is not supported on {platform}",
                           "pick a loopback input with --input-device (see streamer --list-devices)")


@contextmanager
def pulse_source_env(source: str | None) -> Iterator[None]:
    """PULSE_SOURCE set to `source` while a stream opens through the `pulse` device (libpulse reads it when
    the plugin connects); restored after, one stream at a time. No source: nothing changes."""
    if source is None:
        yield
        return
    with _env_lock:
        saved = os.environ.get("PULSE_SOURCE")
        os.environ["PULSE_SOURCE"] = source
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("PULSE_SOURCE", None)
            else:
                os.environ["PULSE_SOURCE"] = saved


class SinkWatch:
    """Tells `on_lost(reason)` once when the sink being recorded goes away, or the sound server does."""

    def __init__(self, sink_name: str, on_lost: Callable[[str], None], poll_s: float = SINK_POLL_S) -> None:
        self.sink_name = sink_name
        self.on_lost = on_lost
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2 * CONNECT_TIMEOUT_S)

    def _run(self) -> None:
        try:
            with pulse_client("streamer-watch") as pulse:
                while not self._stop.wait(self.poll_s):
                    if not any(s.name == self.sink_name for s in pulse.sink_list()):
                        self.on_lost(f"the output device {self.sink_name} went away")
                        return
        except Exception as exc:  # the server went away (or never answered the watch)
            if not self._stop.is_set():
                log.debug("sink watch ended", exc_info=True)
                self.on_lost(f"the sound server went away ({exc})")
