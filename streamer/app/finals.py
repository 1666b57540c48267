"""The Whisper final pass (--final-model): partials and commits come from the CTC model as always; when an
utterance ends its audio is decoded again by a Whisper model on a thread of its own, and that text (with
punctuation and casing, Whisper's word times) is the final.

Threads: the worker hands this stage every chunk before the recognizer sees it (`audio`) and every batch of
events the recognizer returned (`route`); both only record and queue, so the worker goes straight on with the
next utterance's partials. The finals thread decodes one utterance at a time, in order, and publishes its
FinalEvent through the worker's `publish` (under its lock: handlers are never called from two threads at
once). At the end of the stream `drain` waits until every queued utterance has its final.

What is decoded: the utterance's span ([speech start with pre-roll, end with tail + FinalModelConfig.silence_ms),
from the VadEvents' samples). A long utterance that the recognizer finalised in
pieces (max segment length) is decoded piece by piece at the same cuts; one in which the CTC model found no
word to cut at is cut every FinalModelConfig.max_piece_s.

Early decode (WindowConfig.final_pass_early, as the CTC final pass): while the VAD waits out its hangover, the
worker tells this stage the end the utterance will have if the speech does not go on (`hangover`); as soon as
that span's audio is here the decode is queued then, ~300 ms before the VAD ends the utterance. When it does
end there, that decode's text is the final (the same input as a decode at the end would have: the final does
not depend on it); when the speech goes on, the early decode is dropped before or after it ran and gives
nothing (counted: `early_decodes` vs `early_used`).

Guards (thresholds in FinalModelConfig): Whisper invents text on silence, music and noise, so an utterance
the CTC model heard nothing in gets no final when Whisper's no-speech probability is high; a final whose text
shares almost nothing with the CTC text keeps that text and is flagged (`disagreement`, shown in .jsonl).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamer.core.config import MODEL_SAMPLE_RATE, FinalModelConfig, VadConfig
from streamer.core.events import AudioChunk, Event, FinalEvent, VadEvent
from streamer.core.recognizer import AudioHistory
from streamer.errors import require
from streamer.model.whisper import FinalText
from streamer.threadname import name_this_thread

log = logging.getLogger(__name__)

#: How long `drain` waits for the queued utterances at the end of a stream before giving up on them (said).
DRAIN_TIMEOUT_S = 120.0


class FinalModel(Protocol):
    config: FinalModelConfig

    def transcribe(self, audio: np.ndarray, offset_s: float = 0.0, hotwords: str | None = None) -> FinalText: ...


@dataclass(frozen=True)
class FinalJob:
    """One utterance (or piece of one) to decode: audio [start_sample, start_sample + len(audio))."""

    segment_id: int
    start_sample: int
    #: The end of speech (tail included) on the sample axis: the final's end_s.
    end_sample: int
    audio: np.ndarray
    #: The CTC model's text of the same audio ("" when it heard nothing).
    ctc_text: str
    #: Audio the core had seen when the utterance (piece) ended: the final's audio_time_s.
    at_s: float
    forced: bool
    #: The decode of this span queued during the hangover (its result is filled in by the finals thread).
    early: _Early | None = None


@dataclass
class _Open:
    segment_id: int
    start_sample: int
    ctc_text: str = ""


@dataclass(eq=False)
class _Early:
    """A decode queued during the hangover for the end the VAD would report (shared by the two threads of
    this stage: the worker drops it, the finals thread fills in its result)."""

    job: FinalJob
    dropped: threading.Event = field(default_factory=threading.Event)
    result: FinalText | None = None


def similarity(a: str, b: str) -> float:
    """0..100: how much two texts share, lowercased and without punctuation (rapidfuzz ratio)."""
    fuzz = require("rapidfuzz.fuzz", "whisper", package="rapidfuzz")
    from streamer.sinks.dictation import normalize_phrase

    return float(fuzz.ratio(normalize_phrase(a), normalize_phrase(b)))


class WhisperFinals:
    """The stage between the recognizer and the handlers that replaces CTC finals with Whisper's."""

    def __init__(self, model: FinalModel, vad: VadConfig, publish: Callable[[Iterable[Event]], None],
                 hotwords: Sequence[str] = (), clock: Callable[[], float] = time.time,
                 sample_rate: int = MODEL_SAMPLE_RATE, early: bool = True) -> None:
        self.model = model
        self.config = model.config
        self.publish = publish
        self.hotwords = " ".join(hotwords) or None
        self.clock = clock
        self.sample_rate = sample_rate
        self.silence = int(self.config.silence_ms * sample_rate / 1000)
        self.early = early
        # a speech start lies this far before the audio that decided it (pre-roll, onset window), and more
        self._keep_idle = 2 * int((vad.preroll_ms + vad.onset_window_ms + 2 * vad.frame_ms) * sample_rate / 1000)
        self._max_piece = int(self.config.max_piece_s * sample_rate)
        self._history = AudioHistory()
        self._open: _Open | None = None
        self._queue: queue.Queue[FinalJob | _Early | None] = queue.Queue()
        self._early: _Early | None = None
        self._thread = threading.Thread(target=self._run, name="whisper-finals", daemon=True)
        self._started = False
        #: Utterances decoded; of those without a final: Whisper heard nothing, or the no-speech guard held.
        self.decoded = 0
        self.empty = 0
        self.suppressed = 0
        self.disagreements = 0
        self.compute_s = 0.0
        #: Decodes queued during a hangover, how many gave the final, and the compute of those dropped
        #: because the speech went on (run before they were dropped; the others cost nothing).
        self.early_decodes = 0
        self.early_used = 0
        self.early_wasted_s = 0.0
        self.error: BaseException | None = None

    # -- worker thread -------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def audio(self, chunk: AudioChunk) -> None:
        """Every chunk, before the recognizer sees it."""
        self._history.append(chunk)
        if self._open is not None and self._history.end - self._open.start_sample >= self._max_piece:
            o = self._open  # no word to cut at for max_piece_s: decode what there is
            self._submit(o.segment_id, o.start_sample, self._history.end, self._history.end, "", self._history.end, True)
            o.start_sample = self._history.end
            self._drop_early()
        # an utterance the recognizer opens in this chunk starts at most _keep_idle before it
        idle_keep = chunk.start_sample - self._keep_idle
        keep = self._open.start_sample if self._open is not None else idle_keep
        self._history.trim_before(max(0, min(keep, idle_keep)))

    def route(self, events: Iterable[Event]) -> list[Event]:
        """The recognizer's events: CTC finals are taken (their text kept for comparison), an utterance's end
        queues its decode; everything else passes on unchanged and at once."""
        out: list[Event] = []
        for e in events:
            if isinstance(e, FinalEvent) and self._ctc_final(e):
                continue
            if isinstance(e, VadEvent) and e.sample >= 0:
                if e.speech:
                    self._open = _Open(e.segment_id, max(e.sample, self._history.start))
                else:
                    self._close(e)
            out.append(e)
        return out

    def _ctc_final(self, e: FinalEvent) -> bool:
        """Take a CTC final of the open utterance (True); one of no utterance known here passes on as it is."""
        o = self._open
        if o is None or o.segment_id != e.segment_id:
            return False
        if e.forced:  # the recognizer cut a long utterance at a word: decode the piece
            end = round(e.end_s * self.sample_rate)
            self._submit(o.segment_id, o.start_sample, end, end, e.text, round(e.audio_time_s * self.sample_rate), True)
            o.start_sample = end
            self._drop_early()
        else:
            o.ctc_text = e.text
        return True

    def _close(self, e: VadEvent) -> None:
        o = self._open
        self._open = None
        if o is None or o.segment_id != e.segment_id:
            return
        at = round(e.audio_time_s * self.sample_rate)
        early, self._early = self._early, None
        audio_end = min(at, e.sample + self.silence)
        if early is not None:
            j = early.job
            if (j.segment_id, j.start_sample, j.end_sample, j.start_sample + len(j.audio)) == (
                    o.segment_id, max(o.start_sample, self._history.start), e.sample, audio_end):
                self.early_used += 1  # the decode queued during the hangover is this utterance's final
                self._queue.put(FinalJob(o.segment_id, j.start_sample, e.sample, j.audio, o.ctc_text,
                                         at / self.sample_rate, False, early))
                return
            early.dropped.set()
        self._submit(o.segment_id, o.start_sample, e.sample, audio_end, o.ctc_text, at, False)

    def hangover(self, end_sample: int | None) -> None:
        """After each chunk: the end the open utterance will have if the speech does not go on (the VAD is in
        its hangover), or None. Queues the early decode of that span once its audio is here; drops one whose
        end no longer stands (the speech went on)."""
        o = self._open
        if self._early is not None and (end_sample is None or o is None or self._early.job.end_sample != end_sample
                                        or self._early.job.segment_id != o.segment_id):
            self._drop_early()
        if (not self.early or end_sample is None or o is None or self._early is not None
                or self._history.end < end_sample + self.silence):
            return
        job = self._job(o.segment_id, o.start_sample, end_sample, end_sample + self.silence, "", self._history.end, False)
        if job is not None:
            self._early = _Early(job)
            self.early_decodes += 1
            self._queue.put(self._early)

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early.dropped.set()
            self._early = None

    def _job(self, segment_id: int, start: int, end: int, audio_end: int, ctc_text: str, at: int,
             forced: bool) -> FinalJob | None:
        start = max(start, self._history.start)
        if audio_end <= start:
            return None
        audio = self._history.get(start, audio_end).copy()
        return FinalJob(segment_id, start, end, audio, ctc_text, at / self.sample_rate, forced)

    def _submit(self, segment_id: int, start: int, end: int, audio_end: int, ctc_text: str, at: int, forced: bool) -> None:
        job = self._job(segment_id, start, end, audio_end, ctc_text, at, forced)
        if job is not None:
            self._queue.put(job)

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """End of stream: the last utterance was closed; wait until every queued one has its final."""
        if not self._started:
            return True
        self._drop_early()
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("whisper finals: %d utterances still queued after %.0f s", self._queue.qsize(), timeout)
            return False
        return True

    # -- finals thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        name_this_thread()
        while True:
            job = self._queue.get()
            if job is None:
                return
            if isinstance(job, _Early):
                self._run_early(job)
                continue
            try:
                final = self.decode(job)
            except BaseException as exc:  # a failing model: the worker reports it; no final for this piece
                log.debug("whisper final pass failed", exc_info=True)
                self.error = self.error or exc
                continue
            if final is not None:
                self.publish([final])

    def _run_early(self, early: _Early) -> None:
        """Decode a span queued during the hangover, unless the speech went on already; keep the result
        for the utterance's end (FinalJob.early)."""
        if early.dropped.is_set():
            return
        try:
            result = self._transcribe(early.job)
        except BaseException:  # the utterance's end decodes it again and reports a failing model
            log.debug("early whisper decode failed", exc_info=True)
            return
        early.result = result
        if early.dropped.is_set():
            self.early_wasted_s += result.compute_s

    def _transcribe(self, job: FinalJob) -> FinalText:
        return self.model.transcribe(job.audio, job.start_sample / self.sample_rate, self.hotwords)

    def decode(self, job: FinalJob) -> FinalEvent | None:
        """Whisper's final for one utterance, or None (nothing heard, or the no-speech guard). A job whose
        span was decoded early, during the hangover, takes that result."""
        early = job.early.result if job.early is not None else None
        result = early if early is not None else self._transcribe(job)
        self.decoded += 1
        self.compute_s += result.compute_s
        c = self.config
        if log.isEnabledFor(logging.DEBUG):
            log.debug("whisper final: segment %d, %.2f s, %.0f ms, no-speech %.2f: %r (CTC %r)", job.segment_id,
                      len(job.audio) / self.sample_rate, result.compute_s * 1000, result.no_speech_prob, result.text,
                      job.ctc_text)
        if not result.text:
            self.empty += 1
            return None
        if not job.ctc_text.strip() and result.no_speech_prob > c.no_speech_threshold:
            self.suppressed += 1
            return None
        disagreement = similarity(result.text, job.ctc_text) < c.disagreement_below
        self.disagreements += disagreement
        return FinalEvent(
            audio_time_s=job.at_s, wall_time_s=self.clock(), segment_id=job.segment_id, text=result.text,
            words=result.words, start_s=round(job.start_sample / self.sample_rate, 3),
            end_s=round(job.end_sample / self.sample_rate, 3), forced=job.forced, full_pass=True,
            ctc_text=job.ctc_text, disagreement=disagreement)
