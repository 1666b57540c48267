"""Wires the stages and owns the threads.

Threads and who owns what:
- source thread (file replay here; capture in streamer.audio.capture): writes 16 kHz audio into the ring
  buffer, nothing else;
- worker thread (`Pipeline`): the only reader of the ring buffer and the only owner of the Recognizer; it
  calls the event handlers (sinks, UI state) in order;
- main thread: the UI (renders the latest state at its own rate) or waits; it stops everything through one
  `threading.Event`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from streamer.audio.files import iter_blocks_16k, probe
from streamer.audio.ringbuffer import RingBuffer
from streamer.config import MODEL_SAMPLE_RATE
from streamer.errors import StreamerError
from streamer.events import AudioChunk, Event, LevelEvent, StatsEvent
from streamer.recognizer import Recognizer

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]

#: How often the worker publishes level and stats events for the UI.
METER_INTERVAL_S = 0.05
STATS_INTERVAL_S = 0.5
#: Worker wake-up when no audio arrives, so a stop request is noticed.
READ_TIMEOUT_S = 0.1


def dbfs(x: np.ndarray) -> tuple[float, float]:
    if len(x) == 0:
        return -120.0, -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    peak = float(np.max(np.abs(x)))
    return 20 * np.log10(max(rms, 1e-6)), 20 * np.log10(max(peak, 1e-6))


class BlockReplay:
    """Feeds 16 kHz blocks into the ring buffer from its own thread: `fast` (blocking writes, as fast as the
    worker reads) or `realtime` (paced by the clock like a microphone; never blocks, so a worker that falls
    behind loses the oldest audio, counted by the ring buffer). `arrival_time(n)` is when audio up to sample n
    had arrived; `late_s` is how late the latest-delivered block was at worst (scheduling noise)."""

    def __init__(self, blocks: Iterable[np.ndarray], ring: RingBuffer, mode: str, stop: threading.Event,
                 clock: Callable[[], float] = time.time, name: str = "replay") -> None:
        if mode not in ("fast", "realtime"):
            raise ValueError(f"replay mode must be fast or realtime, not {mode!r}")
        self.blocks = blocks
        self.ring = ring
        self.mode = mode
        self.stop = stop
        self.clock = clock
        self.samples_written = 0
        self.started_at: float | None = None
        self.late_s = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def arrival_time(self, sample: int) -> float:
        """Wall time at which audio up to `sample` had arrived (realtime pacing)."""
        assert self.started_at is not None
        return self.started_at + sample / MODEL_SAMPLE_RATE

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.started_at = self.clock()
            for block in self.blocks:
                if self.stop.is_set():
                    break
                if self.mode == "realtime":
                    due = self.arrival_time(self.samples_written + len(block))
                    delay = due - self.clock()
                    if delay > 0 and self.stop.wait(delay):
                        break
                    self.late_s = max(self.late_s, self.clock() - due)
                    self.ring.write(block)
                else:
                    self.ring.write(block, block=True)
                self.samples_written += len(block)
        except BaseException as exc:  # reported by the caller as one line
            self.error = exc
        finally:
            self.ring.close()


class FileReplay(BlockReplay):
    """Replays an audio file (any rate, resampled to 16 kHz as it is read) into the ring buffer."""

    def __init__(self, path: str | Path, ring: RingBuffer, mode: str, stop: threading.Event,
                 clock: Callable[[], float] = time.time) -> None:
        self.info = probe(path)
        super().__init__(iter_blocks_16k(self.info.path), ring, mode, stop, clock, name="file-replay")

    @property
    def total_samples(self) -> int:
        return int(round(self.info.frames * MODEL_SAMPLE_RATE / self.info.sample_rate))


class Pipeline:
    """The worker: reads the ring buffer, runs the recognizer, publishes events to the handlers."""

    def __init__(self, recognizer: Recognizer, ring: RingBuffer, handlers: Iterable[EventHandler] = (),
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
                 extra_dropped: Callable[[], int] = lambda: 0, input_overflows: Callable[[], int] = lambda: 0) -> None:
        self.recognizer = recognizer
        self.ring = ring
        self.handlers = list(handlers)
        self.stop = stop or threading.Event()
        self.clock = clock
        self.extra_dropped = extra_dropped
        self.input_overflows = input_overflows
        self.paused = threading.Event()
        self.error: BaseException | None = None
        #: Outputs that failed (disk full, clipboard gone): dropped from the handlers, transcription goes on.
        self.sink_errors: list[StreamerError] = []
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline-worker", daemon=True)
        self._last_meter = 0.0
        self._last_stats = 0.0

    def add_handler(self, handler: EventHandler) -> None:
        self.handlers.append(handler)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self) -> None:
        """Run the worker loop on the calling thread (until the ring is closed and drained, or stop)."""
        self._run()

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, StatsEvent):
                event = self._complete_stats(event)
            for handler in list(self.handlers):
                try:
                    handler(event)
                except StreamerError as exc:
                    log.debug("output failed, removed", exc_info=True)
                    self.sink_errors.append(exc)
                    self.handlers.remove(handler)

    def dropped_samples(self) -> int:
        return self.ring.dropped_samples + self.extra_dropped()

    def _complete_stats(self, event: StatsEvent) -> StatsEvent:
        return replace(event, lag_s=self.ring.unread() / MODEL_SAMPLE_RATE, dropped_samples=self.dropped_samples(),
                       input_overflows=self.input_overflows())

    def _run(self) -> None:
        try:
            while True:
                chunk = self.ring.read(timeout=READ_TIMEOUT_S)
                if len(chunk.samples):
                    if self.paused.is_set():
                        chunk = AudioChunk(chunk.start_sample, np.zeros_like(chunk.samples), chunk.sample_rate)
                    self._meter(chunk)
                    self.publish(self.recognizer.feed(chunk))
                    now = self.clock()
                    if now - self._last_stats >= STATS_INTERVAL_S:
                        self._last_stats = now
                        self.publish([self.recognizer.stats()])
                elif self.ring.closed and not self.ring.unread():
                    break  # every source closes the ring when it stops: all captured audio was processed
            self.publish(self.recognizer.finish())
        except BaseException as exc:
            self.error = exc
            log.debug("worker failed", exc_info=True)
        finally:
            self.finished.set()

    def _meter(self, chunk: AudioChunk) -> None:
        now = self.clock()
        if now - self._last_meter < METER_INTERVAL_S:
            return
        self._last_meter = now
        rms, peak = dbfs(chunk.samples)
        self.publish([LevelEvent(chunk.end_sample / MODEL_SAMPLE_RATE, now, rms, peak)])
