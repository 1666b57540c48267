"""What the caption screen shows, updated from pipeline events on the worker thread and read as an immutable
snapshot by the render thread. Every method takes the lock briefly; nothing here blocks or does I/O."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.core.events import Event, FinalEvent, LevelEvent, NoticeEvent, PartialEvent, StatsEvent, VadEvent

#: Finished captions kept (for the screen and the transcript printed on exit); older ones are counted.
MAX_FINALS = 1000
#: The real-time factor shown is measured over about this much recent audio (the session average would
#: hide a model that has started to fall behind).
RTF_WINDOW_S = 5.0
#: Warn when the model needs more than this share of real time: close to 1 the worker cannot keep up.
RTF_WARN = 0.8
#: Warn when this much captured audio waits for the worker ...
LAG_WARN_S = 1.0
#: ... or when the lag has grown in this many stats reports in a row (and is above LAG_GROWING_MIN_S).
LAG_GROWING_REPORTS = 4
LAG_GROWING_MIN_S = 0.3
#: Notices from the desktop outputs (voice commands, clipboard): shown this long, at most this many at once;
#: all of them (up to NOTICES_KEPT) are printed again after the screen closes.
NOTICE_SHOW_S = 8.0
NOTICE_LINES = 2
NOTICES_KEPT = 200


@dataclass(frozen=True)
class Caption:
    seq: int  # order of arrival, so a clear can hide what came before it
    text: str
    #: The source's label when several sources run (streamer --mic --desktop), else None.
    label: str | None = None

    @property
    def line(self) -> str:
        return self.text if self.label is None else f"{self.label}: {self.text}"


@dataclass(frozen=True)
class Lane:
    """One source's current line, meter and counters when several sources run side by side."""

    label: str
    committed: str
    tentative: str
    audio_seen: bool
    speech: bool
    rms_dbfs: float
    peak_dbfs: float
    rtf: float
    lag_s: float
    dropped_samples: int
    input_overflows: int = 0
    gap_samples: int = 0
    gaps: int = 0


class _LaneState:
    """What LiveState keeps per source (under its lock)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.committed = self.tentative = ""
        self.audio_seen = self.speech = False
        self.rms = self.peak = -120.0
        self.stats: StatsEvent | None = None

    def snapshot(self) -> Lane:
        s = self.stats
        return Lane(label=self.label, committed=self.committed, tentative=self.tentative, audio_seen=self.audio_seen,
                    speech=self.speech, rms_dbfs=self.rms, peak_dbfs=self.peak, rtf=s.rtf if s else 0.0,
                    lag_s=s.lag_s if s else 0.0, dropped_samples=s.dropped_samples if s else 0,
                    input_overflows=s.input_overflows if s else 0, gap_samples=s.gap_samples if s else 0,
                    gaps=s.gaps if s else 0)


@dataclass(frozen=True)
class Snapshot:
    """Everything one frame of the UI needs."""

    model: str
    audio: str
    captions: tuple[Caption, ...]  # shown (after the last clear)
    committed: str  # the current line: final for this segment ...
    tentative: str  # ... and the tail that the next step may still change
    audio_seen: bool
    speech: bool
    paused: bool
    rms_dbfs: float
    peak_dbfs: float
    rtf: float
    latency_s: float | None
    lag_s: float
    dropped_samples: int
    input_overflows: int
    processed_s: float
    warnings: tuple[str, ...]
    notices: tuple[str, ...] = ()
    gap_samples: int = 0
    gaps: int = 0
    skipped_partials: int = 0
    #: CPU threads the model runs with now (0: not shown).
    threads: int = 0
    #: One per source when several run (streamer --mic --desktop); empty for one source.
    lanes: tuple[Lane, ...] = ()


#: Events that change what the screen shows besides the level meter (LiveState.lively).
_MOVING = (PartialEvent, FinalEvent, VadEvent, NoticeEvent)


class LiveState:
    def __init__(self, model: str, audio: str, lanes: tuple[str, ...] = ()) -> None:
        self.model = model
        self.audio = audio
        self._lanes = {label: _LaneState(label) for label in lanes}
        self._lock = threading.Lock()
        self._finals: deque[Caption] = deque(maxlen=MAX_FINALS)
        self._finals_total = 0
        self._shown_from = 0  # seq of the first caption shown since the last clear
        self._committed = ""
        self._tentative = ""
        self._line_segment = -1  # the utterance the current line shows
        self._audio_seen = False
        self._speech = False
        self._changed_s = float("-inf")  # time.monotonic() of the last caption, VAD or notice change
        self._paused = False
        self._rms = self._peak = -120.0
        self._rtf_points: deque[tuple[float, float]] = deque()  # (processed_s, compute_s)
        self._lags: deque[float] = deque(maxlen=LAG_GROWING_REPORTS + 1)
        self._stats: StatsEvent | None = None
        self._origin: float | None = None  # wall time of audio time 0, estimated (see _track_origin)
        self._latency: float | None = None
        self._prev_partial_end: tuple[int, float] | None = None  # (segment, tentative_until_s)
        self._notices: deque[tuple[float, str]] = deque(maxlen=NOTICES_KEPT)  # (wall time, message)
        self._skipping_until = float("-inf")  # wall time until which "catching up" is shown

    # -- worker thread -------------------------------------------------------------------------------------
    def apply_lane(self, label: str, event: Event) -> None:
        """An event of one of several sources (each source's worker thread)."""
        with self._lock:
            lane = self._lanes[label]
            if isinstance(event, _MOVING):
                self._changed_s = time.monotonic()
            if isinstance(event, LevelEvent):
                self._audio_seen = lane.audio_seen = True
                lane.rms, lane.peak = event.rms_dbfs, event.peak_dbfs
            elif isinstance(event, PartialEvent):
                lane.committed, lane.tentative = event.committed_text, event.tentative_text
            elif isinstance(event, FinalEvent):
                lane.committed = lane.tentative = ""
                if event.text:
                    self._finals.append(Caption(self._finals_total, event.text, label))
                    self._finals_total += 1
            elif isinstance(event, VadEvent):
                lane.speech = event.speech
            elif isinstance(event, NoticeEvent):
                self._notices.append((event.wall_time_s, f"{label}: {event.message}"))
            elif isinstance(event, StatsEvent):
                lane.stats = event

    def apply(self, event: Event) -> None:
        with self._lock:
            self._track_origin(event)
            if isinstance(event, _MOVING):
                self._changed_s = time.monotonic()
            if isinstance(event, LevelEvent):
                self._audio_seen = True
                self._rms, self._peak = event.rms_dbfs, event.peak_dbfs
            elif isinstance(event, PartialEvent):
                self._committed, self._tentative = event.committed_text, event.tentative_text
                self._line_segment = event.segment_id
                self._measure_latency(event)
            elif isinstance(event, FinalEvent):
                if event.segment_id >= self._line_segment:  # a late final (--final-model) keeps the next line
                    self._committed = self._tentative = ""
                if event.text:
                    self._finals.append(Caption(self._finals_total, event.text))
                    self._finals_total += 1
            elif isinstance(event, VadEvent):
                self._speech = event.speech
            elif isinstance(event, NoticeEvent):  # a stall, a device gap, audio dropped: shown as it happens
                self._notices.append((event.wall_time_s, event.message))
            elif isinstance(event, StatsEvent):
                if self._stats is not None and event.skipped_partials > self._stats.skipped_partials:
                    self._skipping_until = event.wall_time_s + NOTICE_SHOW_S
                self._stats = event
                self._rtf_points.append((event.processed_s, event.rtf * event.processed_s))
                while len(self._rtf_points) > 2 and event.processed_s - self._rtf_points[1][0] >= RTF_WINDOW_S:
                    self._rtf_points.popleft()
                self._lags.append(event.lag_s)

    def _measure_latency(self, event: PartialEvent) -> None:
        # This partial shows, for the first time, the audio since the previous partial of the segment ended:
        # its mean age now is the latency a speaker sees (about hop / 2 + compute + lag).
        prev = self._prev_partial_end
        self._prev_partial_end = (event.segment_id, event.tentative_until_s)
        if prev is None or prev[0] != event.segment_id or prev[1] >= event.tentative_until_s:
            return
        shown_from_s = prev[1]
        audio_mid_s = (shown_from_s + event.tentative_until_s) / 2
        assert self._origin is not None  # apply() tracked this event's origin first
        self._latency = max(0.0, event.wall_time_s - (self._origin + audio_mid_s))

    def _track_origin(self, event: Event) -> None:
        # An event about audio up to audio_time_s cannot be emitted before that audio arrived, so
        # wall_time_s - audio_time_s >= the wall time of audio time 0; the smallest value seen is the estimate
        # (exact once the worker has been caught up at least once).
        origin = event.wall_time_s - event.audio_time_s
        if self._origin is None or origin < self._origin:
            self._origin = origin

    # -- desktop-output thread -----------------------------------------------------------------------------
    def notice(self, message: str, wall_time_s: float) -> None:
        with self._lock:
            self._notices.append((wall_time_s, message))

    def all_notices(self) -> list[str]:
        with self._lock:
            return [m for _, m in self._notices]

    # -- UI thread -----------------------------------------------------------------------------------------
    def lively(self, now_s: float, hold_s: float) -> bool:
        """Whether the screen has something moving besides the level meter: speech is on (any lane), or the
        captions, VAD or notices changed within `hold_s` (time.monotonic() seconds)."""
        with self._lock:
            speech = self._speech or any(lane.speech for lane in self._lanes.values())
            return speech or now_s - self._changed_s < hold_s

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused

    def clear(self) -> None:
        """Clear the screen: captions so far and the current line (the next partial brings it back)."""
        with self._lock:
            self._shown_from = self._finals_total
            self._committed = self._tentative = ""
            for lane in self._lanes.values():
                lane.committed = lane.tentative = ""

    def transcript(self) -> tuple[list[str], int]:
        """All finished captions still held, and how many older ones were let go (MAX_FINALS)."""
        with self._lock:
            return [c.line for c in self._finals], self._finals_total - len(self._finals)

    def snapshot(self, now_s: float | None = None) -> Snapshot:
        """`now_s` (wall clock) picks the notices still shown; None shows the latest ones."""
        with self._lock:
            recent = [m for t, m in self._notices if now_s is None or now_s - t < NOTICE_SHOW_S]
            if self._lanes:
                return self._lanes_snapshot(recent)
            s = self._stats
            rtf = self._recent_rtf()
            return Snapshot(
                model=self.model, audio=self.audio,
                captions=tuple(c for c in self._finals if c.seq >= self._shown_from),
                committed=self._committed, tentative=self._tentative,
                audio_seen=self._audio_seen, speech=self._speech, paused=self._paused,
                rms_dbfs=self._rms, peak_dbfs=self._peak,
                rtf=rtf, latency_s=self._latency, lag_s=s.lag_s if s else 0.0,
                dropped_samples=s.dropped_samples if s else 0, input_overflows=s.input_overflows if s else 0,
                processed_s=s.processed_s if s else 0.0, warnings=self._warnings(rtf, s),
                notices=tuple(recent[-NOTICE_LINES:]),
                gap_samples=s.gap_samples if s else 0, gaps=s.gaps if s else 0,
                skipped_partials=s.skipped_partials if s else 0, threads=s.threads if s else 0,
            )

    def _lanes_snapshot(self, recent: list[str]) -> Snapshot:
        """Several sources: each lane's line, meter and counters; the footer's RTF is the sum (one model
        serves them all), lag the largest, dropped and gaps the totals; warnings name their source."""
        lanes = tuple(lane.snapshot() for lane in self._lanes.values())
        rtf = sum(lane.rtf for lane in lanes)
        warnings = []
        if rtf > RTF_WARN:
            warnings.append(f"falling behind real time: RTF {rtf:.2f} for {len(lanes)} sources")
        for lane in lanes:
            if lane.lag_s > LAG_WARN_S:
                warnings.append(f"{lane.label}: {lane.lag_s:.1f} s of audio waiting")
            if lane.dropped_samples:
                warnings.append(f"{lane.label}: audio dropped: {lane.dropped_samples / MODEL_SAMPLE_RATE:.2f} s")
            if lane.gap_samples:
                warnings.append(f"{lane.label}: audio missing: {lane.gap_samples / MODEL_SAMPLE_RATE:.2f} s in "
                                f"{lane.gaps} gap{'s' if lane.gaps != 1 else ''}")
            if lane.input_overflows:
                warnings.append(f"{lane.label}: input overflows: {lane.input_overflows}")
        return Snapshot(
            model=self.model, audio=self.audio,
            captions=tuple(c for c in self._finals if c.seq >= self._shown_from),
            committed="", tentative="", audio_seen=self._audio_seen, speech=any(lane.speech for lane in lanes),
            paused=self._paused, rms_dbfs=max(lane.rms_dbfs for lane in lanes),
            peak_dbfs=max(lane.peak_dbfs for lane in lanes), rtf=rtf, latency_s=None,
            lag_s=max(lane.lag_s for lane in lanes), dropped_samples=sum(lane.dropped_samples for lane in lanes),
            input_overflows=sum(lane.input_overflows for lane in lanes),
            processed_s=max((ls.stats.processed_s for ls in self._lanes.values() if ls.stats), default=0.0),
            warnings=tuple(warnings), notices=tuple(recent[-NOTICE_LINES:]),
            gap_samples=sum(lane.gap_samples for lane in lanes), gaps=sum(lane.gaps for lane in lanes), lanes=lanes)

    def _recent_rtf(self) -> float:
        if len(self._rtf_points) < 2:
            return self._stats.rtf if self._stats else 0.0
        (a0, c0), (a1, c1) = self._rtf_points[0], self._rtf_points[-1]
        return (c1 - c0) / (a1 - a0) if a1 > a0 else 0.0

    def _lag_growing(self) -> bool:
        lags = list(self._lags)
        return (len(lags) == LAG_GROWING_REPORTS + 1 and lags[-1] >= LAG_GROWING_MIN_S
                and all(b > a for a, b in zip(lags, lags[1:])))

    def _warnings(self, rtf: float, s: StatsEvent | None) -> tuple[str, ...]:
        out = []
        if rtf > RTF_WARN:
            out.append(f"falling behind real time: RTF {rtf:.2f}")
        if s is not None and s.lag_s > LAG_WARN_S:
            out.append(f"{s.lag_s:.1f} s of audio waiting")
        elif s is not None and self._lag_growing():
            out.append(f"lag growing: {s.lag_s:.1f} s")
        if s is not None and s.wall_time_s < self._skipping_until:
            out.append(f"catching up: {s.skipped_partials} partials skipped (finals stay complete)")
        if s is not None and s.dropped_samples:
            out.append(f"audio dropped: {s.dropped_samples / MODEL_SAMPLE_RATE:.2f} s")
        if s is not None and s.gap_samples:
            out.append(f"audio missing: {s.gap_samples / MODEL_SAMPLE_RATE:.2f} s in {s.gaps} "
                       f"gap{'s' if s.gaps != 1 else ''} (stalls or device interruptions)")
        if s is not None and s.input_overflows:
            out.append(f"input overflows: {s.input_overflows}")
        return tuple(out)
