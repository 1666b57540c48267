"""The microphone edge: PortAudio (sounddevice) at the device's native rate -> bounded queue -> capture thread
(mono mix-down, soxr streaming resampler to 16 kHz) -> ring buffer.

Threads and who owns what:
- PortAudio's callback thread: copies each block into a bounded queue (`put_nowait`) and counts what it cannot
  queue and the input-overflow flags PortAudio reports. Nothing else runs there.
- the capture thread (`Capture._run`): the only reader of the queue, the only owner of the resampler, the only
  writer of the ring buffer (never blocking: a full ring drops its oldest audio and counts it). It closes the
  ring when capture ends, so the worker drains what is left and finishes.
- the main thread: `start()` / `close()`.

Device loss (PortAudio ends the stream on its own, or stops delivering blocks) sets `Capture.error` to an
AudioDeviceError and closes the ring: the worker finishes the pending segment and every output is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamer.audio.resample import StreamingResampler
from streamer.audio.ringbuffer import RingBuffer
from streamer.config import MODEL_SAMPLE_RATE, BufferConfig, Config
from streamer.errors import AudioDeviceError

log = logging.getLogger(__name__)

#: Audio per PortAudio callback: short enough for a lively meter, long enough to keep callbacks cheap.
CAPTURE_BLOCK_MS = 20
#: Rates tried, in order, after the device's own default rate (never 16 kHz: the resampler does that).
FALLBACK_RATES = (48000, 44100)
#: The capture thread wakes this often to notice close() and a stalled device.
QUEUE_POLL_S = 0.1
#: A device that delivers nothing for this long (after it started delivering, or after start) is lost.
#: PulseAudio's null sink can take ~2 s to deliver the first block after the server starts.
STALL_TIMEOUT_S = 8.0
#: close() waits this long for the capture thread to move the last blocks into the ring.
CLOSE_TIMEOUT_S = 2.0

# PortAudio error codes worth a specific hint (portaudio.h, PaErrorCode).
_PA_HINTS = {
    -9996: "the device index is not valid; see streamer --list-devices",  # paInvalidDevice
    -9997: "the device does not support this sample rate; see streamer --list-devices for its default rate",
    -9998: "the device does not support this channel count",  # paInvalidChannelCount
    -9985: "the device is busy or unavailable: close the program using it or pick another with --input-device",
    -9988: "the device is busy or unavailable: close the program using it or pick another with --input-device",
}
_DEFAULT_HINT = "check the device, or pick another with --input-device (see streamer --list-devices)"


def _sd():
    """sounddevice, or one line saying that PortAudio is missing."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when the PortAudio shared library is absent
        raise AudioDeviceError("the PortAudio library is not installed, so no microphone can be opened",
                               "install it (Debian/Ubuntu: apt install libportaudio2), or use --file PATH") from exc
    return sounddevice


def _pa_message(exc: BaseException) -> tuple[str, int | None]:
    """The PortAudio message of a sounddevice error, without the traceback noise, and its error code."""
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    code = args[1] if len(args) > 1 and isinstance(args[1], int) else None
    return text.strip().splitlines()[-1] if text.strip() else type(exc).__name__, code


class NativeStderrFilter:
    """PortAudio's ALSA host API and alsa-lib print C-level diagnostics straight to file descriptor 2 when a
    device fails ("Expression '...' failed in 'src/hostapi/alsa/pa_linux_alsa.c'", "ALSA lib ..."), which
    would break the rule that an error is one line. While capturing, fd 2 goes through a pipe: those lines go
    to the debug log (--debug shows them), every other line is passed on unchanged (Python's stderr too)."""

    NOISE = (b"Expression '", b"ALSA lib ")

    def __init__(self) -> None:
        self._saved: int | None = None  # the real stderr, restored by stop()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._saved is not None:
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2 (closed or embedded): leave it alone
            return
        read_end, write_end = os.pipe()
        target = os.dup(saved)  # the forwarder's own copy: it may outlive stop() if a child holds the pipe
        os.dup2(write_end, 2)
        os.close(write_end)
        self._saved = saved
        self._thread = threading.Thread(target=self._forward, args=(read_end, target), name="stderr-filter",
                                        daemon=True)
        self._thread.start()

    def _forward(self, read_end: int, target: int) -> None:
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(target, "wb", buffering=0) as out:
            for line in pipe:
                if line.lstrip().startswith(self.NOISE):
                    log.debug("PortAudio: %s", line.decode(errors="replace").rstrip())
                    continue
                try:
                    out.write(line)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # closes the pipe's last write end here: the forwarder drains it and ends
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(1.0)


@dataclass(frozen=True)
class InputDevice:
    """An audio input device as PortAudio lists it."""

    index: int
    name: str
    host_api: str
    input_channels: int
    default_rate_hz: int
    is_default: bool

    @property
    def label(self) -> str:
        return f"[{self.index}] {self.name}"


def list_input_devices() -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order."""
    sd = _sd()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {_pa_message(exc)[0]}", _DEFAULT_HINT) from exc
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
    """`streamer --list-devices`: one row per input device, the default marked with '*'. Exit code 1 when
    there is none."""
    out = out or sys.stdout
    devices = list_input_devices()
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
    if not matches:
        raise AudioDeviceError(f"no input device matches {text!r}", f"input devices: {candidates}")
    raise AudioDeviceError(f"{len(matches)} input devices match {text!r}",
                           f"give an index or a longer name: {'; '.join(d.label for d in matches)}")


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
    message, code = _pa_message(exc)
    at = f" at {rate_hz} Hz" if rate_hz else ""
    return AudioDeviceError(f"cannot open input device {device.label}{at}: {message}", _PA_HINTS.get(code, _DEFAULT_HINT))


def check_settings(device: InputDevice, sample_rate_hz: int | None = None) -> CaptureSettings:
    """Ask PortAudio whether the device opens at its native rate (or `sample_rate_hz` when given), mono or
    with its own channels, before anything is opened. One clear error naming the device otherwise."""
    sd = _sd()
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
                raise AudioDeviceError(f"cannot use input device {device.label}: {exc}", _DEFAULT_HINT) from exc
    assert first_error is not None
    raise device_error(device, first_error, rates[0])


class Capture:
    """A live source for `streamer.cli.run_stream`: nothing is opened until `start()` (the model loads first).

    Capture ends when `stop` is set, on `close()`, or when the device is lost; then the stream is stopped,
    the blocks already captured are moved into the ring, the resampler is flushed and the ring is closed, so
    the worker finishes the pending segment on its own.

    `dropped_samples()` counts, in 16 kHz samples, audio the callback could not queue (the capture thread fell
    behind); the ring buffer counts its own drops (the worker fell behind). `input_overflows()` counts the
    blocks PortAudio flagged as overflowed (audio lost before it reached us)."""

    mode = "live"

    def __init__(self, settings: CaptureSettings, ring: RingBuffer, stop: threading.Event,
                 buffer: BufferConfig | None = None, on_ready: Callable[[CaptureSettings], None] | None = None,
                 stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        self.settings = settings
        self.ring = ring
        self.stop = stop
        self.on_ready = on_ready
        self.stall_timeout_s = stall_timeout_s
        self.error: AudioDeviceError | None = None
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=(buffer or BufferConfig()).capture_queue_blocks)
        self._resampler = StreamingResampler(settings.sample_rate_hz, MODEL_SAMPLE_RATE)
        self._stream = None
        self._stream_lock = threading.Lock()
        self._stderr_filter = NativeStderrFilter()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._closing = threading.Event()
        self._stream_ended = threading.Event()
        # Written only by the PortAudio callback (single writer; ints under the GIL), read by anyone.
        self._dropped_frames = 0
        self._overflows = 0
        self.frames_captured = 0  # capture thread only

    # -- counters ------------------------------------------------------------------------------------------
    def dropped_samples(self) -> int:
        return int(round(self._dropped_frames * MODEL_SAMPLE_RATE / self.settings.sample_rate_hz))

    def input_overflows(self) -> int:
        return self._overflows

    # -- PortAudio callback thread: copy, queue, count; nothing else ----------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, _time, status) -> None:
        if status.input_overflow:
            self._overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self._dropped_frames += frames

    def _finished(self) -> None:
        self._stream_ended.set()

    # -- main thread ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open and start the PortAudio stream, then the capture thread."""
        sd = _sd()
        s = self.settings
        self._stderr_filter.start()
        try:
            with self._stream_lock:
                self._stream = sd.InputStream(device=s.device.index, samplerate=s.sample_rate_hz,
                                              channels=s.channels, dtype="float32", blocksize=s.block_frames,
                                              callback=self._callback, finished_callback=self._finished)
                self._stream.start()
        except sd.PortAudioError as exc:
            self._close_stream()
            self._stderr_filter.stop()
            raise device_error(s.device, exc, s.sample_rate_hz) from exc
        self._thread.start()

    def close(self) -> None:
        """End capture (see the class note) and wait for the capture thread; safe to call more than once."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_TIMEOUT_S)
        self._close_stream()
        self._stderr_filter.stop()
        self.ring.close()

    def _close_stream(self) -> None:
        with self._stream_lock:
            stream, self._stream = self._stream, None
            if stream is None:
                return
            try:
                stream.stop(ignore_errors=True)  # waits for the callback in progress: its block is queued
                stream.close(ignore_errors=True)
            except Exception:  # a lost device may refuse even this; nothing is left to save
                log.debug("closing the input stream failed", exc_info=True)

    # -- capture thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        last_block = time.monotonic()
        ready = False
        try:
            while not (self.stop.is_set() or self._closing.is_set()):
                try:
                    block = self._queue.get(timeout=QUEUE_POLL_S)
                except queue.Empty:
                    if self._stream_ended.is_set():
                        self._lost("the stream ended (was the device unplugged, or did the sound server stop?)")
                        break
                    if time.monotonic() - last_block > self.stall_timeout_s:
                        what = "stopped delivering audio" if ready else "delivered no audio"
                        self._lost(f"the device {what} for {self.stall_timeout_s:g} s")
                        break
                    continue
                last_block = time.monotonic()
                self._write(block)
                if not ready:
                    ready = True
                    if self.on_ready is not None:
                        self.on_ready(self.settings)
            self._close_stream()
            while True:  # what was captured before the stream stopped
                try:
                    self._write(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.ring.write(self._resampler.flush())
        except BaseException as exc:  # reported by run_stream as one line
            self.error = AudioDeviceError(f"capture from {self.settings.device.label} failed: {exc}", _DEFAULT_HINT)
            log.debug("capture thread failed", exc_info=True)
        finally:
            self.ring.close()

    def _write(self, block: np.ndarray) -> None:
        self.frames_captured += len(block)
        self.ring.write(self._resampler.process(block))  # never blocks: a full ring drops (and counts) old audio

    def _lost(self, why: str) -> None:
        self.error = AudioDeviceError(f"lost input device {self.settings.device.label}: {why}",
                                      "the transcript so far was kept; check the device and start again")


def header_text(settings: CaptureSettings) -> str:
    return f"mic: {settings.device.name} @ {settings.sample_rate_hz} Hz"


def run_live(args: argparse.Namespace, config: Config) -> int:
    """`streamer` with no input file: check the device (before the model loads), then stream from it."""
    from streamer.cli import run_stream, wants_tui

    device = resolve_input_device(args.input_device)
    settings = check_settings(device)

    def announce(s: CaptureSettings) -> None:
        print(f"streamer: listening on {s.device.label} @ {s.sample_rate_hz} Hz (Ctrl+C to stop)",
              file=sys.stderr, flush=True)

    on_ready = None if wants_tui(args) else announce
    return run_stream(args, config, lambda ring, stop: Capture(settings, ring, stop, config.buffer, on_ready),
                      header_text(settings))
