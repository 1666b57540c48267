"""A real PulseAudio server as a virtual microphone: a null sink `vmic` whose monitor is the default source.
Whatever `paplay` plays into the sink is what PortAudio (through ALSA's pulse plugin, libasound2-plugins)
records from its `pulse` / `default` devices. Used by the live soak (streamer bench --soak --soak-live) and
by the tests of live capture.

Each server is private: its own runtime folder (socket, pid) and state folder, so runs side by side do not
meet. Clients find it through PULSE_RUNTIME_PATH (`PulseMic.env`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from streamer.errors import ConfigError

#: How long a fresh server may take to answer `pactl info`.
START_TIMEOUT_S = 10.0


class PulseUnavailable(ConfigError):
    """No PulseAudio here, or it did not start."""


class PulseMic:
    def __init__(self, folder: Path, sink_rate_hz: int = 44100) -> None:
        for tool in ("pulseaudio", "pactl", "paplay"):
            if shutil.which(tool) is None:
                raise PulseUnavailable(f"{tool} is not installed", "apt-get install pulseaudio pulseaudio-utils")
        self.folder = folder
        runtime, state = folder / "runtime", folder / "state"
        runtime.mkdir(parents=True, exist_ok=True)
        state.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, PULSE_RUNTIME_PATH=str(runtime), PULSE_STATE_PATH=str(state))
        self.env.pop("PULSE_SERVER", None)
        self.log = folder / "pulseaudio.log"
        # As root (CI, containers) pulseaudio warns but runs in per-user mode; -n skips default.pa so only the
        # native protocol and the null sink are loaded (no hardware probing, no D-Bus).
        cmd = ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
               "-n", "--load=module-native-protocol-unix",
               f"--load=module-null-sink sink_name=vmic rate={sink_rate_hz} channels=2",
               f"--log-target=file:{self.log}"]
        self.process = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-500:] if self.log.exists() else ""
                raise PulseUnavailable("pulseaudio did not start", tail.strip() or f"no log in {self.log}")
            time.sleep(0.05)
        self.pactl("set-default-sink", "vmic")
        self.pactl("set-default-source", "vmic.monitor")

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=True).stdout

    def play(self, wav: Path, wait: bool = True) -> subprocess.Popen:
        """Play a file into the virtual microphone (returns the paplay process; waited for when `wait`)."""
        p = subprocess.Popen(["paplay", "--device=vmic", str(wav)], env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        if wait:
            p.wait(timeout=60)
            if p.returncode != 0:
                raise PulseUnavailable(f"paplay failed on {wav} (exit {p.returncode})", f"see {self.log}")
        return p

    def add_output(self, name: str = "speakers", rate_hz: int = 48000) -> None:
        """Desktop audio: another null sink, made the default output device, so that what a media player
        plays (`play_as_media`) goes there and its monitor is what `streamer --desktop` records, while the
        default source (the virtual microphone) stays the other sink's monitor."""
        self.pactl("load-module", "module-null-sink", f"sink_name={name}", f"rate={rate_hz}", "channels=2",
                   f"sink_properties=device.description={name.capitalize()}")
        self.pactl("set-default-sink", name)

    def play_as_media(self, wav: Path, wait: bool = True) -> subprocess.Popen:
        """Play a file to the default output device, as a media player would (no device named)."""
        p = subprocess.Popen(["paplay", "--client-name=media-player", str(wav)], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            p.wait(timeout=60)
            if p.returncode != 0:
                raise PulseUnavailable(f"paplay failed on {wav} (exit {p.returncode})", f"see {self.log}")
        return p

    def unload_module_of(self, sink_name: str) -> None:
        """The output device `sink_name` disappears (its null-sink module is unloaded)."""
        for line in self.pactl("list", "short", "modules").splitlines():
            cols = line.split("\t")
            if len(cols) > 2 and cols[1] == "module-null-sink" and f"sink_name={sink_name}" in cols[2].split():
                self.pactl("unload-module", cols[0])

    def unload_sink(self) -> None:
        """The device disappears: the null sink (and its monitor, the capture source) is unloaded."""
        for line in self.pactl("list", "short", "modules").splitlines():
            cols = line.split("\t")
            if len(cols) > 1 and cols[1] == "module-null-sink":
                self.pactl("unload-module", cols[0])

    def kill(self) -> None:
        """The sound server dies, as a device that disappears mid-stream."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
