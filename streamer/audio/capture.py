"""The microphone edge: PortAudio (sounddevice) at the device's native rate -> bounded queue -> capture thread
(mono mix-down, soxr streaming resampler to 16 kHz) -> ring buffer.

Threads and who owns what:
- PortAudio's callback thread: copies each block into a bounded queue (`put_nowait`) and counts what it cannot
  queue and the input-overflow flags PortAudio reports. Nothing else runs there (but naming the thread once).
- the capture thread (`Capture._run`): the only reader of the queue, the only owner of the resampler, the only
  writer of the ring buffer (never blocking: a full ring drops its oldest audio and counts it). It closes the
  ring when capture ends, so the worker drains what is left and finishes. In silence, while the worker waits
  for several blocks at once (`RingBuffer.shortfall`), it takes them from the queue in one wake-up.
- the main thread: `start()` / `close()`.

Gaps and stalls. The callback stamps each block with its arrival time; the capture thread compares the
audio delivered with the wall-clock time that passed (`GapMeter`) and records what never came in the ring
(`RingBuffer.record_gap`, `gap_samples`), apart from the audio dropped from full buffers. Two causes, one
count: the process itself was stopped or starved (SIGSTOP / SIGCONT, a suspended laptop: the capture thread
notices that it did not run for a while) or the device paused (PulseAudio moving the stream to another source
when the microphone goes away: ~2 s of nothing, then audio from the new source). Either way the gap is
counted and reported, and listening goes on.

Device loss (PortAudio ends the stream on its own, or a device that delivers nothing for STALL_TIMEOUT_S of
the capture thread's own running time, so a stall of the whole process is never taken for it) sets
`Capture.error` to an AudioDeviceError and closes the ring: the worker finishes the pending segment and every
output is written.
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
from streamer.audio.monitor import SinkWatch, pulse_source_env
from streamer.audio.resample import StreamingResampler
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE, BufferConfig
from streamer.errors import AudioDeviceError
from streamer.threadname import name_this_thread

log = logging.getLogger(__name__)

#: The OS name given to PortAudio's callback thread (otherwise it shows as the process).
PORTAUDIO_THREAD_NAME = "portaudio"
#: The capture thread wakes this often to notice close() and a stalled device.
QUEUE_POLL_S = 0.1
#: While the worker waits for more audio than one block (in silence it reads IDLE_READ_MS at a time), the
#: capture thread leaves blocks in the queue until that much will have come, plus this margin for the last
#: block's arrival, instead of waking for each: the worker wakes no later, the capture thread less often
#: (here a thread's wake-up costs ~80 us of CPU, more than a block's resampling when warm).
BATCH_MARGIN_S = 0.005
#: A device that delivers nothing for this long (after it started delivering, or after start) is lost.
#: PulseAudio's null sink can take ~2 s to deliver the first block after the server starts. Counted in the
#: capture thread's own running time: a wake-up later than MAX_COUNTED_WAIT_S counts as that much only.
STALL_TIMEOUT_S = 8.0
MAX_COUNTED_WAIT_S = 0.5
#: The capture thread did not run for this long: the process was stopped, suspended or starved (a stall).
PROCESS_STALL_S = 1.0
#: GapMeter: audio delivered is compared with the time that passed over ticks this long (the least deficit
#: in a tick, so the jitter of block arrivals does not count) ...
GAP_TICK_S = 1.0
#: ... and a deficit grown by more than this since the last tick is a gap, counted once it has settled (a
#: tick whose deficit is no lower than the one before, within GAP_SETTLE_S: a backlog the sound server kept
#: through a stall may take a few ticks to arrive) ...
GAP_MIN_S = 0.25
GAP_SETTLE_S = 0.05
#: ... while slower growth is the device's clock running slow against ours (tracked up to this rate).
CLOCK_DRIFT_MAX = 0.001


def stall_clock() -> float:
    """Seconds on a clock that goes on while the system is suspended (CLOCK_BOOTTIME on Linux), so a
    suspended laptop shows as a gap; the monotonic clock elsewhere."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


class GapMeter:
    """Audio a device did not deliver, from block arrival times: the deficit (frames that real time says
    should have arrived since the first block, less the frames that did) stays level while audio flows and
    grows by the length of every gap. Pure: fed (arrival time, frames delivered in all)."""

    def __init__(self, rate: int, tick_s: float = GAP_TICK_S, min_gap_s: float = GAP_MIN_S,
                 drift: float = CLOCK_DRIFT_MAX) -> None:
        self.rate = rate
        self.tick_s = tick_s
        self.min_gap = min_gap_s * rate
        self.drift = drift
        self.gap_frames = 0
        self._t0: float | None = None
        self._frames0 = 0
        self._base = 0.0  # the deficit when audio last flowed normally
        self._tick_start = 0.0
        self._tick_min = float("inf")
        self._pending: float | None = None  # the deficit of a gap not settled yet

    @property
    def settling(self) -> bool:
        """A gap was seen and is still being measured (a backlog may still be arriving)."""
        return self._pending is not None

    def arrived(self, t: float, frames_total: int) -> int:
        """A block arrived at `t`, with `frames_total` delivered so far (itself included). Returns the frames
        of a gap found now (0 almost always)."""
        if self._t0 is None:
            self._t0, self._frames0, self._tick_start = t, frames_total, t
            return 0
        deficit = (t - self._t0) * self.rate - (frames_total - self._frames0)
        self._tick_min = min(self._tick_min, deficit)
        if t - self._tick_start < self.tick_s:
            return 0
        found, level = 0, self._tick_min
        if level < self._base:  # the device runs fast against our clock (or delivered a backlog)
            self._base, self._pending = level, None
        elif level - self._base > self.min_gap:
            if self._pending is None or level < self._pending - GAP_SETTLE_S * self.rate:
                self._pending = level  # still coming down: measured again at the next tick
            else:
                level = min(level, self._pending)
                found = int(round(level - self._base))
                self.gap_frames += found
                self._base, self._pending = level, None
        else:  # slow drift of the device clock
            self._base += min(level - self._base, self.drift * (t - self._tick_start) * self.rate)
            self._pending = None
        self._tick_start, self._tick_min = t, float("inf")
        return found
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
        # (arrival time, frames dropped before it, block)
        self._queue: queue.Queue[tuple[float, int, np.ndarray]] = queue.Queue(
            maxsize=(buffer or BufferConfig()).capture_queue_blocks)
        self._resampler = StreamingResampler(settings.sample_rate_hz, MODEL_SAMPLE_RATE)
        self._block_16k = settings.block_frames * MODEL_SAMPLE_RATE // settings.sample_rate_hz
        self._stream: Any = None  # a sounddevice.InputStream while open (sounddevice is imported when used)
        self._stream_lock = threading.Lock()
        self._stderr_filter = NativeStderrFilter()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._closing = threading.Event()
        self._stream_ended = threading.Event()
        # Written only by the PortAudio callback (single writer; ints under the GIL), read by anyone.
        self._dropped_frames = 0
        self._overflows = 0
        self._callback_named = False  # PortAudio's thread is named once, from its first callback
        self.frames_captured = 0  # capture thread only
        self.clock = stall_clock
        self.gap_meter = GapMeter(settings.sample_rate_hz)
        self.stalls = 0  # times the capture thread did not run for PROCESS_STALL_S or more
        self._stall_s = 0.0  # the latest stall, not yet reported (with the gap it caused)
        self._stall_at: float | None = None
        self._stall_dropped = 0  # callback drops when the stall was noticed (the backlog may overflow the queue)
        self._fail_reason: str | None = None  # set by fail(): the device is gone (desktop audio's sink watch)
        monitor_of = settings.device.monitor_of
        self._sink_watch = SinkWatch(monitor_of, self.fail) if monitor_of is not None else None

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

    def gap_samples(self) -> int:
        """16 kHz samples the device never delivered (stalls, interruptions); also in `ring.gap_samples`."""
        return int(round(self.gap_meter.gap_frames * MODEL_SAMPLE_RATE / self.settings.sample_rate_hz))

    # -- PortAudio callback thread: copy, queue, count; nothing else ----------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, _time, status) -> None:
        if not self._callback_named:  # once: top -H and `streamer bench --idle-live-s` show it by name
            name_this_thread(PORTAUDIO_THREAD_NAME)
            self._callback_named = True
        if status.input_overflow:
            self._overflows += 1
        try:
            self._queue.put_nowait((self.clock(), self._dropped_frames, indata.copy()))
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
            with self._stream_lock, pulse_source_env(s.device.pulse_source):
                self._stream = sd.InputStream(device=s.device.index, samplerate=s.sample_rate_hz,
                                              channels=s.channels, dtype="float32", blocksize=s.block_frames,
                                              callback=self._callback, finished_callback=self._finished)
                self._stream.start()
        except sd.PortAudioError as exc:
            self._close_stream()
            self._stderr_filter.stop()
            raise device_error(s.device, exc, s.sample_rate_hz) from exc
        self._thread.start()
        if self._sink_watch is not None:
            self._sink_watch.start()

    def fail(self, why: str) -> None:
        """The device is gone (from another thread: the sink watch of desktop audio): capture ends as for a
        lost device, with `why` in its error line; what was captured before is kept."""
        self._fail_reason = why
        self._closing.set()

    def close(self) -> None:
        """End capture (see the class note) and wait for the capture thread; safe to call more than once."""
        self._closing.set()
        if self._sink_watch is not None:
            self._sink_watch.stop()
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
        name_this_thread()
        silent_s = 0.0  # the capture thread's own running time since the last block
        last_wake = self.clock()
        ready = False
        try:
            while not (self.stop.is_set() or self._closing.is_set()):
                pause_s = self._batch_pause_s()
                if pause_s > 0 and self._closing.wait(pause_s):
                    break
                try:
                    arrived, dropped_before, block = self._queue.get(timeout=QUEUE_POLL_S)
                except queue.Empty:
                    block = None
                now = self.clock()
                waited, last_wake = now - last_wake, now
                if waited >= PROCESS_STALL_S:  # this thread did not run: the whole process was held up
                    self.stalls += 1
                    if self._stall_at is None:
                        self._stall_dropped = self._dropped_frames
                    self._stall_s += waited
                    self._stall_at = now
                    log.debug("capture thread stalled for %.2f s", waited)
                if block is None:
                    if self._stream_ended.is_set():
                        self._lost("the stream ended (was the device unplugged, or did the sound server stop?)")
                        break
                    silent_s += min(waited, MAX_COUNTED_WAIT_S)
                    if silent_s > self.stall_timeout_s:
                        what = "stopped delivering audio" if ready else "delivered no audio"
                        self._lost(f"the device {what} for {self.stall_timeout_s:g} s")
                        break
                    self._report_stall(now)
                    continue
                silent_s = 0.0
                self._write(block)
                self._measure(arrived, self.frames_captured + dropped_before, now)
                if not ready:
                    ready = True
                    if self.on_ready is not None:
                        self.on_ready(self.settings)
            self._close_stream()
            while True:  # what was captured before the stream stopped
                try:
                    self._write(self._queue.get_nowait()[2])
                except queue.Empty:
                    break
            self.ring.write(self._resampler.flush())
            if self._fail_reason is not None and self.error is None:
                self._lost(self._fail_reason)
        except BaseException as exc:  # reported by run_stream as one line
            self.error = AudioDeviceError(f"capture from {self.settings.device.label} failed: {exc}", DEFAULT_HINT)
            log.debug("capture thread failed", exc_info=True)
        finally:
            self.ring.close()

    def _batch_pause_s(self) -> float:
        """How long blocks may stay in the queue: while it is empty and the ring's reader waits for more
        than one more block, until the rest of what it waits for will have come (at most QUEUE_POLL_S);
        otherwise 0 (every block as it comes, as in speech)."""
        if not self._queue.empty():
            return 0.0
        short = self.ring.shortfall()
        if short <= self._block_16k:
            return 0.0
        return min(QUEUE_POLL_S, short / MODEL_SAMPLE_RATE + BATCH_MARGIN_S)

    def _measure(self, arrived: float, delivered: int, now: float) -> None:
        """Gap bookkeeping for one block: a gap found is recorded in the ring with its cause."""
        found = self.gap_meter.arrived(arrived, delivered)
        if found:
            seconds = found / self.settings.sample_rate_hz
            samples = int(round(found * MODEL_SAMPLE_RATE / self.settings.sample_rate_hz))
            if self._stall_at is not None:
                reason = self._stall_reason(seconds)
            else:
                reason = (f"no audio from {self.settings.device.label} for {seconds:.1f} s (was it unplugged, or "
                          "switched to another source?); listening again")
            self.ring.record_gap(samples, reason)
            log.debug("gap: %s", reason)
        self._report_stall(now)

    def _report_stall(self, now: float) -> None:
        """A stall that lost no audio is reported once the gap meter has had time to see the backlog."""
        if (self._stall_at is not None and not self.gap_meter.settling
                and now - self._stall_at > 3 * self.gap_meter.tick_s):
            self.ring.record_gap(0, self._stall_reason(0.0))

    def _stall_reason(self, missing_s: float) -> str:
        """The line for a stall (and forget it): what never came, and what the backlog lost in the queue."""
        dropped_s = (self._dropped_frames - self._stall_dropped) / self.settings.sample_rate_hz
        lost = [f"{missing_s:.1f} s of audio missing"] if missing_s else []
        lost += [f"{dropped_s:.1f} s dropped catching up"] if dropped_s >= 0.05 else []
        reason = (f"streamer was stalled for {self._stall_s:.1f} s (stopped, suspended or starved of CPU): "
                  f"{', '.join(lost) or 'nothing missing at the input'}; listening again")
        self._stall_at, self._stall_s = None, 0.0
        return reason

    def _write(self, block: np.ndarray) -> None:
        self.frames_captured += len(block)
        self.ring.write(self._resampler.process(block))  # never blocks: a full ring drops (and counts) old audio

    def _lost(self, why: str) -> None:
        self.error = AudioDeviceError(f"lost input device {self.settings.device.label}: {why}",
                                      "the transcript so far was kept; check the device and start again")


def header_text(settings: CaptureSettings) -> str:
    device = settings.device
    if device.monitor_of is not None:  # desktop audio: say which output device is captured
        return f"desktop: {device.name} [{device.monitor_of}] @ {settings.sample_rate_hz} Hz"
    return f"mic: {device.name} @ {settings.sample_rate_hz} Hz"
