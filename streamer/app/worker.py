"""The worker: the one thread that reads the ring buffer, runs the recognizer and publishes its events.

Threads and who owns what:
- the source's thread (capture, file replay) writes 16 kHz audio into the ring buffer, nothing else;
- the worker thread (`Worker`) is the only reader of the ring buffer and the only owner of the Recognizer;
  it calls the event handlers (sinks, UI state) in order;
- the worker's stats ticker (`Worker._tick`) publishes a StatsEvent every STATS_INTERVAL_S of wall time when
  the worker has not (a long model step, a starved CPU), so lag, drops and gaps show as they happen; the
  handlers are called under one lock, never from two threads at once;
- the main thread starts and stops it through the Session.

Overload policy: finals stay complete. While model steps cost more than SHED_STEP_RTF of the hop (a busy
CPU) the `HopGovernor` lengthens the hop, and while the worker is behind real time the recognizer commits
several hops per window (fewer partials either way: counted as `skipped_partials`); audio is lost only when the ring buffer
overflows (counted as `dropped_samples`, a "dropped" NoticeEvent at most every DROP_NOTICE_INTERVAL_S).
Audio that never arrived (a stall, a device interruption: `RingBuffer.record_gap`) gives a "gap" NoticeEvent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import IDLE_READ_MS, MODEL_SAMPLE_RATE
from streamer.core.events import AudioChunk, Event, LevelEvent, NoticeEvent, StatsEvent
from streamer.core.recognizer import Recognizer
from streamer.core.windowing import WindowSchedule
from streamer.errors import StreamerError
from streamer.threadname import name_this_thread

if TYPE_CHECKING:
    from streamer.app.finals import WhisperFinals

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]

#: How often the worker publishes level and stats events for the UI.
METER_INTERVAL_S = 0.05
STATS_INTERVAL_S = 0.5
#: Worker wake-up when no audio arrives, so a stop request is noticed.
READ_TIMEOUT_S = 0.1
#: At most one "audio dropped" notice this often (the counter on every StatsEvent stays exact).
DROP_NOTICE_INTERVAL_S = 5.0


class HopGovernor:
    """Sheds partials under load: lengthens the recognizer's hop while its model steps cost more than
    SHED_STEP_RTF of the hop, and shortens it back (never below the configured hop) when they are fast
    again. Every frame is still committed and finals are untouched; the partials not shown are counted
    (`shed_partials`: the configured hops that had no partial of their own)."""

    def __init__(self, schedule: WindowSchedule) -> None:
        from streamer.core.config import SHED_MAX_HOP_FACTOR, SHED_STEP_RTF, SHED_STEPS

        self.schedule = schedule
        self.base = schedule.base_hop_frames
        self.limit = max(self.base, int(self.base * SHED_MAX_HOP_FACTOR))
        self.budget = SHED_STEP_RTF
        self._steps: list[float] = []  # ms per frame of the recent steps' windows
        self._n = SHED_STEPS
        self._debt = 0.0
        self.shed_partials = 0

    def observe(self, step_ms: float, window_frames: int, frame_ms: float) -> None:
        """After each model step: its time and window length (frames)."""
        hop = self.schedule.hop_frames
        self._debt += hop / self.base - 1.0
        whole = int(self._debt)
        self.shed_partials += whole
        self._debt -= whole
        if window_frames <= 0:
            return
        self._steps.append(step_ms / window_frames)
        del self._steps[:-self._n]
        if len(self._steps) < self._n:
            return
        per_frame = sorted(self._steps)[self._n // 2]
        # the window of a hop h: left context + h + look-ahead frames; solve step(h) = budget * h
        s = self.schedule
        fixed = s.left_frames + s.lookahead_frames
        denom = self.budget * frame_ms - per_frame
        want = self.limit if denom <= 0 else int(-(-(per_frame * fixed) // denom))
        want = min(self.limit, max(self.base, want))
        if want != hop:
            s.hop_frames = want
            self._steps.clear()  # judge the new hop on its own steps


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
    silence, so nothing is transcribed. `pause_at(sample)` / `resume_at(sample)` (what Session.pause and
    resume call) switch at an exact sample of the stream, the ring's write position when asked: audio
    captured before a pause is still transcribed, and the utterance in progress is finalised at once
    (`Recognizer.end_utterance`) instead of after the VAD's hangover, so push-to-talk gets its final about one
    model pass after the key is released. A handler that raises a StreamerError (an output that failed) is
    removed and its error kept in `sink_errors`; transcription goes on for the others."""

    def __init__(self, recognizer: Recognizer, ring: RingBuffer, handlers: Iterable[EventHandler] = (),
                 clock: Callable[[], float] = time.time,
                 source_dropped: Callable[[], int] = lambda: 0, input_overflows: Callable[[], int] = lambda: 0,
                 paused: threading.Event | None = None,
                 nonfinite_samples: Callable[[], int] = lambda: 0, final_pass: WhisperFinals | None = None) -> None:
        self.recognizer = recognizer
        #: The Whisper final pass (--final-model): sees every chunk and takes the CTC finals (streamer.app.finals).
        self.final_pass = final_pass
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
        self._ticker = threading.Thread(target=self._tick, name="pipeline-stats", daemon=True)
        self._publish_lock = threading.RLock()
        self._last_meter = float("-inf")
        self._last_stats = float("-inf")
        self._core_stats = recognizer.stats()  # the latest, taken on the worker thread
        self._in_feed = 0  # samples of the chunk the recognizer is working on
        self._gaps_told = 0
        self._drops_told = 0
        self._last_drop_notice = float("-inf")
        schedule = getattr(recognizer, "schedule", None)
        #: Lengthens the hop while steps are slow (realtime sessions: those that catch up; a file replayed as
        #: fast as possible keeps its windows, so its output does not depend on timing).
        self.governor = HopGovernor(schedule) if schedule is not None and schedule.max_hops_per_step > 1 else None
        self._switches: deque[tuple[int, bool]] = deque()  # (sample, paused from there), in stream order
        self._switch_lock = threading.Lock()
        self._feeding_paused = self.paused.is_set()  # what the worker does now (worker thread only)
        self._switched = False  # pause_at / resume_at were used: they decide, not the `paused` event

    def add_handler(self, handler: EventHandler) -> None:
        self.handlers.append(handler)

    def start(self) -> None:
        if self.final_pass is not None:
            self.final_pass.start()
        self._thread.start()
        self._ticker.start()

    def pause_at(self, sample: int) -> None:
        """From this sample of the stream on, the recognizer hears silence; the utterance open there is
        finalised at once. Any thread; the worker is woken so it acts without waiting for more audio."""
        self._switch(sample, True)

    def resume_at(self, sample: int) -> None:
        """From this sample of the stream on, the recognizer hears the audio again."""
        self._switch(sample, False)

    def _switch(self, sample: int, paused: bool) -> None:
        with self._switch_lock:
            self._switches.append((sample, paused))
            self._switched = True
        self.ring.wake()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def publish(self, events: Iterable[Event]) -> None:
        with self._publish_lock:
            for event in events:
                notices: list[Event] = []
                if isinstance(event, StatsEvent):
                    event = self._complete_stats(event)
                    self._last_stats = self.clock()
                    notices = self._notices(event)
                for e in [event, *notices]:
                    self._dispatch(e)

    def _dispatch(self, event: Event) -> None:
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
        lag = (self.ring.unread() + self._in_feed) / MODEL_SAMPLE_RATE
        shed = self.governor.shed_partials if self.governor is not None else 0
        return replace(event, lag_s=lag, dropped_samples=self.dropped_samples(),
                       skipped_partials=event.skipped_partials + shed,
                       input_overflows=self.input_overflows(), nonfinite_samples=self.nonfinite_samples(),
                       gap_samples=self.ring.gap_samples, gaps=len(self.ring.gaps),
                       threads=int(getattr(self.recognizer.model, "threads_in_use", 0) or 0))

    def _notices(self, stats: StatsEvent) -> list[Event]:
        """What the user is told as it happens: each new gap, and audio dropped (rate-limited)."""
        out: list[Event] = []
        gaps = self.ring.gaps
        for gap in gaps[self._gaps_told:]:
            out.append(NoticeEvent(stats.audio_time_s, stats.wall_time_s, "gap", gap.reason))
        self._gaps_told = len(gaps)
        now = self.clock()
        if stats.dropped_samples > self._drops_told and now - self._last_drop_notice >= DROP_NOTICE_INTERVAL_S:
            out.append(NoticeEvent(stats.audio_time_s, stats.wall_time_s, "dropped",
                                   f"processing fell behind: {stats.dropped_samples / MODEL_SAMPLE_RATE:.1f} s of "
                                   f"audio dropped so far ({stats.lag_s:.1f} s waiting, {stats.skipped_partials} "
                                   "partials skipped); finals go on"))
            self._drops_told = stats.dropped_samples
            self._last_drop_notice = now
        return out

    def _tick(self) -> None:
        """Stats on a wall-clock interval while the worker is busy in a long step (or has no audio)."""
        name_this_thread()
        while not self.finished.wait(STATS_INTERVAL_S):
            with self._publish_lock:
                if self.finished.is_set():
                    break
                if self.clock() - self._last_stats >= STATS_INTERVAL_S:
                    try:
                        self.publish([replace(self._core_stats, wall_time_s=self.clock())])
                    except BaseException:  # a handler bug: the worker thread meets it too and keeps it
                        log.debug("stats ticker failed", exc_info=True)
                        return

    def _run(self) -> None:
        name_this_thread()
        try:
            while True:
                self._switch_due(self.recognizer.audio_end_sample)  # a pause asked for at what was already fed
                chunk = self.ring.read(timeout=READ_TIMEOUT_S, min_samples=self._min_read())
                if len(chunk.samples):
                    self._feed_switched(chunk)
                    if self.clock() - self._last_stats >= STATS_INTERVAL_S:
                        self.publish([self._core_stats])
                elif self.ring.closed and not self.ring.unread():
                    break  # every source closes the ring when it stops: all captured audio was processed
            self.publish(self._route(self.recognizer.finish()))
            if self.final_pass is not None:
                self.final_pass.drain()  # the last utterances' finals, before the stream counts as ended
        except BaseException as exc:
            self.error = exc
            log.debug("worker failed", exc_info=True)
        finally:
            with self._publish_lock:  # the ticker publishes nothing after the last events
                self.finished.set()

    def _min_read(self) -> int:
        """Samples to wait for before reading: IDLE_READ_MS of them while no utterance is open (fewer
        wake-ups in silence), else every block as it comes."""
        if self.recognizer.idle:
            return IDLE_READ_MS * MODEL_SAMPLE_RATE // 1000
        return 1

    def _feed(self, chunk: AudioChunk) -> None:
        if self._feeding_paused:
            chunk = AudioChunk(chunk.start_sample, np.zeros_like(chunk.samples), chunk.sample_rate)
        self._meter(chunk)
        self._in_feed = len(chunk.samples)
        if self.final_pass is not None:
            self.final_pass.audio(chunk)
        windows = self.recognizer.windows_run
        events = self._route(self.recognizer.feed(chunk))
        if self.final_pass is not None:
            self.final_pass.hangover(self.recognizer.pending_end_sample)
        self._core_stats = self.recognizer.stats()
        self._in_feed = 0
        if self.governor is not None and self.recognizer.windows_run > windows:
            s = self.governor.schedule
            self.governor.observe(self._core_stats.step_compute_ms, s.left_frames + s.hop_frames + s.lookahead_frames,
                                  s.geometry.frame_s * 1000)
        self.publish(events)

    def _feed_switched(self, chunk: AudioChunk) -> None:
        """Feed the chunk, cut at the pause / resume switches inside it: a switch takes effect at its sample
        (a pause ends the open utterance there). A caller that never used them sets the `paused` event
        instead, which decides for the whole chunk."""
        if not self._switched:
            self._set_feeding_paused(self.paused.is_set())
            self._feed(chunk)
            return
        start, end = chunk.start_sample, chunk.end_sample
        while start < end:
            self._switch_due(start)
            with self._switch_lock:
                cut = min(end, self._switches[0][0]) if self._switches else end
            self._feed(AudioChunk(start, chunk.samples[start - chunk.start_sample:cut - chunk.start_sample],
                                  chunk.sample_rate))
            start = cut
        self._switch_due(end)

    def _switch_due(self, position: int) -> None:
        """Apply the switches at or before `position` (the next sample to be fed)."""
        while True:
            with self._switch_lock:
                if not self._switches or self._switches[0][0] > position:
                    return
                _, paused = self._switches.popleft()
            self._set_feeding_paused(paused)

    def _set_feeding_paused(self, paused: bool) -> None:
        if paused and not self._feeding_paused:
            self.publish(self._route(self.recognizer.end_utterance()))
            self._core_stats = self.recognizer.stats()
        self._feeding_paused = paused

    def _route(self, events: list[Event]) -> list[Event]:
        return events if self.final_pass is None else self.final_pass.route(events)

    def _meter(self, chunk: AudioChunk) -> None:
        now = self.clock()
        if now - self._last_meter < METER_INTERVAL_S:
            return
        self._last_meter = now
        rms, peak = dbfs(chunk.samples)
        self.publish([LevelEvent(chunk.end_sample / MODEL_SAMPLE_RATE, now, rms, peak)])


def notice_printer(write: Callable[[str], None]) -> EventHandler:
    """A handler that passes each NoticeEvent on as one "streamer: warning: ..." line (the plain-output mode
    prints them to stderr; the caption screen shows them itself)."""
    def handle(event: Event) -> None:
        if isinstance(event, NoticeEvent):
            write(f"streamer: warning: {event.message}")
    return handle
