"""A Session is one running transcription: source -> ring buffer -> worker -> recognizer -> sinks.

    with Session(model, source_factory, SessionOptions(config), sinks=[...]) as session:
        session.wait()
    session.raise_errors()

Built from a typed options object over an already loaded model, so several sessions can share one model
(one thread at a time calls the model: each session's worker in turn, or one scheduler). `start()` and
`stop()` are idempotent and `with` runs the same ordered shutdown on every exit path (normal end, exception,
signal): stop the source, close the ring, let the worker finalise the utterance in progress, close the sinks.

Threads and who owns what: the source's thread writes the ring; the worker thread (streamer.app.worker)
reads it and owns the Recognizer and calls the sinks; the caller's thread starts, pauses and stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamer.app.worker import EventHandler, Worker
from streamer.audio.ringbuffer import RingBuffer
from streamer.audio.source import Source, SourceFactory
from streamer.core.config import MODEL_SAMPLE_RATE, Config
from streamer.core.events import Event
from streamer.core.recognizer import FinalRescorer, FrameModel, Recognizer
from streamer.sinks import Sink

if TYPE_CHECKING:
    from streamer.app.finals import FinalModel, WhisperFinals

#: How long each join of the worker waits before looking again (the worker always ends: the ring is closed).
JOIN_POLL_S = 0.5


@dataclass(frozen=True)
class SessionOptions:
    """What a session needs besides its model, source and sinks."""

    config: Config = field(default_factory=Config)
    #: Commit several hops per step when the worker is behind (live and paced sources). A file replayed as
    #: fast as possible always uses one hop per step, so its output does not depend on timing.
    catch_up: bool = True


class Session:
    def __init__(self, model: FrameModel, source: SourceFactory, options: SessionOptions | None = None, *,
                 sinks: Sequence[Sink] = (), handlers: Iterable[EventHandler] = (),
                 final_rescorer: FinalRescorer | None = None, clock: Callable[[], float] = time.time,
                 final_model: FinalModel | None = None, final_hotwords: Sequence[str] = ()) -> None:
        self.options = options or SessionOptions()
        config = self.options.config.validate()
        self.model = model
        self.clock = clock
        self.stopping = threading.Event()
        self.paused_event = threading.Event()
        self.ring = RingBuffer(int(config.buffer.ring_capacity_s * MODEL_SAMPLE_RATE))
        self.source: Source = source(self.ring, self.stopping)
        hops = config.window.max_catch_up_hops if self.options.catch_up else 1
        from streamer.model.silero import load_silero

        self.recognizer = Recognizer(model, config, clock=clock, max_hops_per_step=hops, final_rescorer=final_rescorer,
                                     silero=load_silero)
        self.sinks = list(sinks)
        self.final_pass: WhisperFinals | None = None
        if final_model is not None:  # --final-model: Whisper writes the finals on a thread of its own
            from streamer.app.finals import WhisperFinals

            self.final_pass = WhisperFinals(final_model, config.vad, lambda events: self.worker.publish(events),
                                            hotwords=final_hotwords, clock=clock,
                                            early=config.window.final_pass_early)
        self.worker = Worker(self.recognizer, self.ring, [*(s.handle for s in self.sinks), *handlers],
                             clock=clock, source_dropped=self.source.dropped_samples,
                             input_overflows=self.source.input_overflows, paused=self.paused_event,
                             nonfinite_samples=self.nonfinite_samples, final_pass=self.final_pass)
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()
        self._pause_lock = threading.RLock()

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> Session:
        """Start the worker, then the source (a source that fails to open still stops the session cleanly:
        its error is raised after the shutdown)."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        if hasattr(self.model, "reset"):
            self.model.reset()
        self.worker.start()
        try:
            self.source.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """The ordered shutdown, once: source stops and closes the ring, the worker drains it and finalises
        the utterance in progress, then every sink is closed. Safe from any thread but the worker's."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.stopping.set()
        try:
            self.source.close()
        finally:
            self.ring.close()
            if self._started:
                while not self.worker.join(timeout=JOIN_POLL_S):
                    pass
            for sink in self.sinks:
                sink.close()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream has ended (the source closed the ring and the worker drained it)."""
        return self.worker.finished.wait(timeout)

    def request_stop(self) -> None:
        """Ask the session to stop from a signal handler or the UI; `stop()` does the rest."""
        self.stopping.set()

    def add_handler(self, handler: Callable[[Event], None]) -> None:
        """Another event consumer (the UI); only before start()."""
        self.worker.add_handler(handler)

    # -- pause ---------------------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self.paused_event.is_set()

    def pause(self) -> None:
        """Stop listening from the audio captured so far: the utterance in progress is finalised at once
        (push-to-talk: the final comes about one model pass after the key is released), and from here the
        recognizer hears silence. Any thread (not a signal handler: it takes a lock)."""
        with self._pause_lock:
            if not self.paused_event.is_set():
                self.worker.pause_at(self.ring.write_pos)
                self.paused_event.set()

    def resume(self) -> None:
        """Listen again from the audio captured from now on."""
        with self._pause_lock:
            if self.paused_event.is_set():
                self.worker.resume_at(self.ring.write_pos)
                self.paused_event.clear()

    def toggle_pause(self) -> bool:
        """Pause or resume; returns whether the session is now paused."""
        with self._pause_lock:
            if self.paused:
                self.resume()
            else:
                self.pause()
            return self.paused

    # -- state and results ---------------------------------------------------------------------------------
    @property
    def finished(self) -> threading.Event:
        return self.worker.finished

    @property
    def processed_s(self) -> float:
        return self.recognizer.audio_end_sample / MODEL_SAMPLE_RATE

    def dropped_samples(self) -> int:
        return self.worker.dropped_samples()

    def nonfinite_samples(self) -> int:
        """NaN / Inf input samples the source replaced with zeros."""
        return self.source.nonfinite_samples()

    def errors(self) -> list[BaseException]:
        """After stop(): every failure, in the order they matter: the worker, the outputs, the source."""
        found: list[BaseException] = []
        if self.worker.error is not None:
            found.append(self.worker.error)
        if self.final_pass is not None and self.final_pass.error is not None:
            found.append(self.final_pass.error)
        found.extend(self.worker.sink_errors)
        if self.source.error is not None:
            found.append(self.source.error)
        return found

    def raise_errors(self) -> None:
        """After stop(): the first failure of the worker, an output, or the source, as raised there."""
        found = self.errors()
        if found:
            raise found[0]

    def warnings(self) -> list[str]:
        """Lines for the user about audio lost on the way (after stop())."""
        lines = []
        dropped = self.dropped_samples()
        if dropped:
            lines.append(f"warning: {dropped} samples ({dropped / MODEL_SAMPLE_RATE:.2f} s) of audio were dropped "
                         "because processing fell behind")
        gaps = self.ring.gaps
        if gaps:
            missing = self.ring.gap_samples / MODEL_SAMPLE_RATE
            lines.append(f"warning: {len(gaps)} gap{'s' if len(gaps) > 1 else ''} in the input ({missing:.2f} s of audio "
                         "missing: the process was stalled, or the device paused or was switched)")
        overflows = self.source.input_overflows()
        if overflows:
            lines.append(f"warning: the audio device reported {overflows} input overflows (audio lost before it "
                         "reached streamer)")
        nonfinite = self.nonfinite_samples()
        if nonfinite:
            lines.append(f"warning: {nonfinite} non-finite input sample{'s' if nonfinite > 1 else ''} (NaN or Inf) "
                         "replaced with silence")
        return lines
