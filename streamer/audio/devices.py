"""Audio input devices as PortAudio (sounddevice) lists them: listing, choosing one by index or name, and
checking the settings it opens with (its native rate, mono when it allows), each failure one clear line."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from streamer.errors import AudioDeviceError

#: Audio per PortAudio callback: short enough for a lively meter, long enough to keep callbacks cheap.
CAPTURE_BLOCK_MS = 20
#: Rates tried, in order, after the device's own default rate (never 16 kHz: the resampler does that).
FALLBACK_RATES = (48000, 44100)
# PortAudio error codes worth a specific hint (portaudio.h, PaErrorCode).
PA_HINTS: dict[int | None, str] = {
    -9996: "the device index is not valid; see streamer --list-devices",  # paInvalidDevice
    -9997: "the device does not support this sample rate; see streamer --list-devices for its default rate",
    -9998: "the device does not support this channel count",  # paInvalidChannelCount
    -9985: "the device is busy or unavailable: close the program using it or pick another with --input-device",
    -9988: "the device is busy or unavailable: close the program using it or pick another with --input-device",
}
DEFAULT_HINT = "check the device, or pick another with --input-device (see streamer --list-devices)"


def sounddevice_module():
    """sounddevice, or one line saying that PortAudio is missing."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when the PortAudio shared library is absent
        raise AudioDeviceError("the PortAudio library is not installed, so no microphone can be opened",
                               "install it (Debian/Ubuntu: apt install libportaudio2), or use --file PATH") from exc
    return sounddevice


def pa_message(exc: BaseException) -> tuple[str, int | None]:
    """The PortAudio message of a sounddevice error, without the traceback noise, and its error code."""
    args: tuple[object, ...] = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    code = args[1] if len(args) > 1 and isinstance(args[1], int) else None
    return text.strip().splitlines()[-1] if text.strip() else type(exc).__name__, code



@dataclass(frozen=True)
class InputDevice:
    """An audio input device as PortAudio lists it."""

    index: int
    name: str
    host_api: str
    input_channels: int
    default_rate_hz: int
    is_default: bool
    #: Desktop audio (streamer.audio.monitor): the sound server's source this device records, through
    #: PortAudio's `pulse` device (None: the device itself) ...
    pulse_source: str | None = None
    #: ... the output device (the sink's name) it is the monitor of ...
    monitor_of: str | None = None
    #: ... and whether that is the default output.
    default_output: bool = False

    @property
    def label(self) -> str:
        if self.pulse_source is not None:
            return f"{self.name} ({self.pulse_source})"
        return f"[{self.index}] {self.name}"


def list_input_devices() -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order."""
    sd = sounddevice_module()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {pa_message(exc)[0]}", DEFAULT_HINT) from exc
    if default_in is None or default_in < 0:  # sounddevice's own default: the host API's default input
        default_in = next((a["default_input_device"] for a in apis if a["default_input_device"] >= 0), -1)
    return [
        InputDevice(index=i, name=d["name"], host_api=apis[d["hostapi"]]["name"], input_channels=d["max_input_channels"],
                    default_rate_hz=int(round(d["default_samplerate"])), is_default=i == default_in)
        for i, d in enumerate(devices) if d["max_input_channels"] > 0
    ]


NO_DEVICE_HINT = ("connect a microphone and check that the sound server (PulseAudio/PipeWire) is running; "
                  "or transcribe a file with --file PATH")


def print_devices(out=None) -> int:
    """`streamer --list-devices`: one row per input device, the default marked with '*', then the output
    devices' monitors (desktop audio, streamer.audio.monitor), the default output's marked. Exit code 1 when
    there is no input at all."""
    from streamer.audio.monitor import monitor_devices

    out = out or sys.stdout
    devices = list_input_devices()
    monitors = monitor_devices(devices)
    if not devices:
        print(f"no audio input devices found ({NO_DEVICE_HINT})", file=out)
        return 1
    width = max(len("name"), *(len(d.name) for d in devices))
    api_width = max(len("host API"), *(len(d.host_api) for d in devices))
    print(f"  {'#':>3}  {'name':<{width}}  {'host API':<{api_width}}  {'in ch':>5}  {'rate Hz':>7}", file=out)
    for d in devices:
        mark = "*" if d.is_default else " "
        print(f"{mark} {d.index:>3}  {d.name:<{width}}  {d.host_api:<{api_width}}  {d.input_channels:>5}  "
              f"{d.default_rate_hz:>7}", file=out)
    print("(* default; pick one with --input-device INDEX_OR_NAME)", file=out)
    if monitors:
        print("\ndesktop audio (what an output device plays; --desktop records the default output's):", file=out)
        src_width = max(len("source"), *(len(m.pulse_source or "") for m in monitors))
        name_width = max(len("name"), *(len(m.name) for m in monitors))
        print(f"  {'source':<{src_width}}  {'name':<{name_width}}  {'in ch':>5}  {'rate Hz':>7}", file=out)
        for m in monitors:
            mark = "*" if m.default_output else " "
            print(f"{mark} {m.pulse_source or '':<{src_width}}  {m.name:<{name_width}}  {m.input_channels:>5}  "
                  f"{m.default_rate_hz:>7}  desktop audio", file=out)
        print("(* the default output; pick one with --input-device SOURCE)", file=out)
    elif sys.platform.startswith("linux") and any(d.name == "pulse" for d in devices):
        import importlib.util

        if importlib.util.find_spec("pulsectl") is None:
            print("\n(desktop audio: pip install 'streamer[desktop]' to list the output devices' monitors)", file=out)
    return 0


def resolve_input_device(spec: str | int | None, devices: list[InputDevice] | None = None) -> InputDevice:
    """The input device named by an index, a name, or a unique part of a name (case-insensitive); None is the
    default input. No match or several -> one line listing the candidates."""
    devices = list_input_devices() if devices is None else devices
    if not devices:
        raise AudioDeviceError("no audio input device found", NO_DEVICE_HINT)
    candidates = "; ".join(d.label for d in devices)
    if spec is None or str(spec).strip() == "":
        default = next((d for d in devices if d.is_default), None)
        if default is None:
            raise AudioDeviceError("there is no default audio input device",
                                   f"pick one with --input-device INDEX_OR_NAME: {candidates}")
        return default
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        match = next((d for d in devices if d.index == index), None)
        if match is None:
            raise AudioDeviceError(f"no input device with index {index}", f"input devices: {candidates}")
        return match
    needle = text.casefold()
    exact = [d for d in devices if d.name.casefold() == needle]
    matches = exact or [d for d in devices if needle in d.name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not matches:  # a desktop audio monitor (streamer --list-devices), by source name or part of its name
        from streamer.audio.monitor import monitor_devices

        monitors = monitor_devices(devices)
        matches = ([m for m in monitors if (m.pulse_source or "").casefold() == needle]
                   or [m for m in monitors if needle in m.name.casefold() or needle in (m.pulse_source or "").casefold()])
        if len(matches) == 1:
            return matches[0]
        candidates = "; ".join([candidates, *(m.pulse_source or m.name for m in monitors)])
    if not matches:
        raise AudioDeviceError(f"no input device matches {text!r}", f"input devices: {candidates}")
    raise AudioDeviceError(f"{len(matches)} input devices match {text!r}",
                           f"give an index or a longer name: {'; '.join(d.pulse_source or d.label for d in matches)}")


@dataclass(frozen=True)
class CaptureSettings:
    """What the stream is opened with: the device's native rate, mono when the device allows it."""

    device: InputDevice
    sample_rate_hz: int
    channels: int

    @property
    def block_frames(self) -> int:
        return max(1, self.sample_rate_hz * CAPTURE_BLOCK_MS // 1000)


def device_error(device: InputDevice, exc: BaseException, rate_hz: int | None = None) -> AudioDeviceError:
    message, code = pa_message(exc)
    at = f" at {rate_hz} Hz" if rate_hz else ""
    return AudioDeviceError(f"cannot open input device {device.label}{at}: {message}", PA_HINTS.get(code, DEFAULT_HINT))


def check_settings(device: InputDevice, sample_rate_hz: int | None = None) -> CaptureSettings:
    """Ask PortAudio whether the device opens at its native rate (or `sample_rate_hz` when given), mono or
    with its own channels, before anything is opened. One clear error naming the device otherwise."""
    sd = sounddevice_module()
    rates = [sample_rate_hz] if sample_rate_hz else list(dict.fromkeys([device.default_rate_hz, *FALLBACK_RATES]))
    channel_options = list(dict.fromkeys([1, min(2, device.input_channels), device.input_channels]))
    first_error: BaseException | None = None
    for rate in rates:
        for channels in channel_options:
            try:
                sd.check_input_settings(device=device.index, channels=channels, dtype="float32", samplerate=rate)
                return CaptureSettings(device, int(rate), channels)
            except sd.PortAudioError as exc:
                first_error = first_error or exc
            except ValueError as exc:  # sounddevice: invalid parameters, e.g. not an input device
                raise AudioDeviceError(f"cannot use input device {device.label}: {exc}", DEFAULT_HINT) from exc
    assert first_error is not None
    raise device_error(device, first_error, rates[0])
