"""The worker: the one thread that reads the ring buffer, runs the recognizer and publishes its events.

Threads and who owns what:
- the source's thread (capture, file replay) writes 16 kHz audio into the ring buffer, nothing else;
- the worker thread (`Worker`) is the only reader of the ring buffer and the only owner of the Recognizer;
  it calls the event handlers (sinks, UI state) in order;
- the main thread starts and stops it through the Session.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.core.events import AudioChunk, Event, LevelEvent, StatsEvent
from streamer.core.recognizer import Recognizer
from streamer.errors import StreamerError

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]

#: How often the worker publishes level and stats events for the UI.
METER_INTERVAL_S = 0.05
STATS_INTERVAL_S = 0.5
#: Worker wake-up when no audio arrives, so a stop request is noticed.
READ_TIMEOUT_S = 0.1


def dbfs(x: np.ndarray) -> tuple[float, float]:
    """RMS and peak level of a block in dB full scale (-120 for an empty block)."""
    if len(x) == 0:
        return -120.0, -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    peak = float(np.max(np.abs(x)))
    return 20 * np.log10(max(rms, 1e-6)), 20 * np.log10(max(peak, 1e-6))


class Worker:
    """Reads the ring until its source closes it and it is drained (a stop closes it too), feeds the
    recognizer, publishes.

    While `paused` is set the audio still flows (the time axis goes on) but the recognizer and the meter get
    silence, so nothing is transcribed. A handler that raises a StreamerError (an output that failed) is
    removed and its error kept in `sink_errors`; transcription goes on for the others."""

    def __init__(self, recognizer: Recognizer, ring: RingBuffer, handlers: Iterable[EventHandler] = (),
                 clock: Callable[[], float] = time.time,
                 source_dropped: Callable[[], int] = lambda: 0, input_overflows: Callable[[], int] = lambda: 0,
                 paused: threading.Event | None = None,
                 nonfinite_samples: Callable[[], int] = lambda: 0) -> None:
        self.recognizer = recognizer
        self.ring = ring
        self.handlers = list(handlers)
        self.clock = clock
        self.source_dropped = source_dropped
        self.input_overflows = input_overflows
        self.nonfinite_samples = nonfinite_samples
        self.paused = paused or threading.Event()
        self.error: BaseException | None = None
        self.sink_errors: list[StreamerError] = []
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline-worker", daemon=True)
        self._last_meter = float("-inf")
        self._last_stats = float("-inf")

    def add_handler(self, handler: EventHandler) -> None:
        self.handlers.append(handler)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

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
        """Audio lost in the ring (the worker fell behind) and in the source (its queue was full)."""
        return self.ring.dropped_samples + self.source_dropped()

    def _complete_stats(self, event: StatsEvent) -> StatsEvent:
        return replace(event, lag_s=self.ring.unread() / MODEL_SAMPLE_RATE, dropped_samples=self.dropped_samples(),
                       input_overflows=self.input_overflows(), nonfinite_samples=self.nonfinite_samples())

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
