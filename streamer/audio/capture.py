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

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.audio.devices import DEFAULT_HINT, CaptureSettings, device_error, sounddevice_module
from streamer.audio.resample import StreamingResampler
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE, BufferConfig
from streamer.errors import AudioDeviceError

log = logging.getLogger(__name__)

#: The capture thread wakes this often to notice close() and a stalled device.
QUEUE_POLL_S = 0.1
#: A device that delivers nothing for this long (after it started delivering, or after start) is lost.
#: PulseAudio's null sink can take ~2 s to deliver the first block after the server starts.
STALL_TIMEOUT_S = 8.0
#: close() waits this long for the capture thread to move the last blocks into the ring.
CLOSE_TIMEOUT_S = 2.0


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


class Capture:
    """The microphone as a Source (streamer.audio.source): nothing is opened until `start()` (the model loads
    first).

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
        self._stream: Any = None  # a sounddevice.InputStream while open (sounddevice is imported when used)
        self._stream_lock = threading.Lock()
        self._stderr_filter = NativeStderrFilter()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._closing = threading.Event()
        self._stream_ended = threading.Event()
        # Written only by the PortAudio callback (single writer; ints under the GIL), read by anyone.
        self._dropped_frames = 0
        self._overflows = 0
        self.frames_captured = 0  # capture thread only

    @property
    def total_samples(self) -> int | None:
        return None  # a device goes on until it is closed

    # -- counters ------------------------------------------------------------------------------------------
    def dropped_samples(self) -> int:
        return int(round(self._dropped_frames * MODEL_SAMPLE_RATE / self.settings.sample_rate_hz))

    def input_overflows(self) -> int:
        return self._overflows

    def nonfinite_samples(self) -> int:
        """NaN / Inf samples the device delivered, replaced with zeros by the resampler."""
        return self._resampler.nonfinite_samples

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
        sd = sounddevice_module()
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
            self.error = AudioDeviceError(f"capture from {self.settings.device.label} failed: {exc}", DEFAULT_HINT)
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
