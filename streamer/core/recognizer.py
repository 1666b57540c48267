"""The pure, push-based streaming core: feed 16 kHz audio chunks, get events out. No threads, no I/O.

    recognizer = Recognizer(model, config)
    for chunk in chunks:
        for event in recognizer.feed(chunk): ...
    for event in recognizer.finish(): ...

Per chunk: VAD boundaries are applied in order; inside a speech segment every window the schedule allows is
run through the model, its hop frames committed to the stitcher and its look-ahead frames shown as the
tentative tail (PartialEvent). At the end of a segment the rest is committed and a FinalEvent emitted; for an
utterance up to WindowConfig.final_pass_max_s the final's text and word times come from one more pass over
the whole utterance (the context an offline decode sees). During silence the model is never called.

A chunk is worked through in VAD-frame pieces, so every event carries the audio time at which it was
decided (the end of the piece that produced it), whatever the chunk size: a whole file fed at once gives the
same events as the same audio fed as it is captured. With one hop per step (no catch-up: the library
default and fast file replay) the windows run piece by piece too, exactly as in real time; a caller that
catches up (max_hops_per_step > 1: live capture, a paced replay behind real time) runs them once per chunk,
several hops per window, and the partials that this merges are counted (`skipped_partials`).

Stage decisions and timings are logged at DEBUG on this module's logger (`--debug`): VAD boundaries with
their sample times, each window's frames and compute time, the final pass and the final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from streamer.core.config import MODEL_SAMPLE_RATE, Config
from streamer.core.decoding import GreedyDecoder, Vocabulary
from streamer.core.events import AudioChunk, Event, FinalEvent, PartialEvent, SpeechBoundary, StatsEvent, VadEvent, Window
from streamer.core.stitching import CTCStitcher, TokenSpan, collapse
from streamer.core.vad import SileroLoader, VadSegmenter
from streamer.core.windowing import FrameGeometry, WindowSchedule

log = logging.getLogger(__name__)


class FrameModel(Protocol):
    """What the core needs from a model: its frame grid, its vocabulary, and logits for a window."""

    geometry: FrameGeometry
    vocabulary: Vocabulary

    def logits(self, audio: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        """Logits [frames, vocab] for audio starting at absolute sample `start_sample` (a multiple of the
        stride; lets a model reuse work across overlapping windows; None: no reuse)."""
        ...


class PassPrefetchModel(Protocol):
    """What a model may add to FrameModel to compute part of an utterance's final pass while it is spoken
    (WindowConfig.final_pass_prefetch; streamer.model.passfeatures): `prepare_pass` is given the utterance's
    audio so far, from its first frame at absolute sample `start_sample`, once per VAD frame of audio;
    `pass_logits` is the final pass over the utterance (what `logits(audio)` gives, on that work)."""

    def prepare_pass(self, audio: np.ndarray, start_sample: int) -> None: ...

    def pass_logits(self, audio: np.ndarray, start_sample: int) -> np.ndarray: ...


#: Optional final-text decoder (beam search, hotwords): committed frame log-probabilities of one utterance
#: [frames, vocab] -> text. Greedy stitching stays the source of partials and word times.
FinalRescorer = Callable[[np.ndarray], str]


class AudioHistory:
    """Recent 16 kHz audio by absolute sample index, trimmed from the front as the core moves on (also kept
    by the Whisper final pass, streamer.app.finals, for the utterances it decodes)."""

    def __init__(self) -> None:
        self.start = 0
        self.data = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def append(self, chunk: AudioChunk) -> None:
        samples = np.asarray(chunk.samples, dtype=np.float32)
        if chunk.start_sample > self.end:  # audio dropped upstream: keep the time axis with silence
            samples = np.concatenate([np.zeros(chunk.start_sample - self.end, np.float32), samples])
        elif chunk.start_sample < self.end:
            samples = samples[self.end - chunk.start_sample :]
        self.data = np.concatenate([self.data, samples]) if len(self.data) else samples.copy()

    def get(self, start: int, end: int) -> np.ndarray:
        if start < self.start:
            raise IndexError(f"audio from sample {start} was already discarded (history starts at {self.start})")
        return self.data[start - self.start : end - self.start]

    def trim_before(self, sample: int) -> None:
        if sample > self.start:
            cut = min(sample - self.start, len(self.data))
            self.data = self.data[cut:]
            self.start += cut


@dataclass(frozen=True)
class _Segment:
    segment_id: int
    start_sample: int
    first_frame: int


@dataclass(frozen=True)
class _EarlyPass:
    """A final pass run before the VAD ended its segment, for the end it would report then."""

    segment_id: int
    end_sample: int
    logits: np.ndarray
    compute_s: float
    #: The rescorer's text for these logits (beam search, run early too), None without a rescorer.
    text: str | None = None


class Recognizer:
    def __init__(self, model: FrameModel, config: Config | None = None, *,
                 clock: Callable[[], float] = time.monotonic, max_hops_per_step: int = 1,
                 vad: VadSegmenter | None = None, sample_rate: int = MODEL_SAMPLE_RATE,
                 final_rescorer: FinalRescorer | None = None, silero: SileroLoader | None = None) -> None:
        self.config = (config or Config()).validate()
        self.model = model
        self.clock = clock
        self.sample_rate = sample_rate
        self.geometry = model.geometry
        self.schedule = WindowSchedule(self.geometry, self.config.window, max_hops_per_step)
        self.vad = vad or VadSegmenter(self.config.vad, sample_rate, silero=silero)
        self.decoder = GreedyDecoder(model.vocabulary, self.geometry.frame_s)
        self.stitcher = CTCStitcher(model.vocabulary.blank_id)
        self._history = AudioHistory()
        self._segment: _Segment | None = None
        self._segment_count = 0
        self._piece_start_s = 0.0
        self._keep_samples = int((self.config.vad.preroll_ms + self.config.vad.onset_window_ms
                                  + 2 * self.config.vad.frame_ms) * sample_rate / 1000)
        self.compute_s = 0.0
        self.windows_run = 0
        self._last_step_ms = 0.0
        self._split = False  # the open segment was finalised in pieces (no final pass for it)
        self.final_rescorer = final_rescorer
        self._committed_logits: list[np.ndarray] = []  # only kept when a rescorer is set
        #: Partials not shown because a window committed several hops at once (catching up), or because an
        #: utterance ended before its windows ran (a chunk that held all of it while behind).
        self.skipped_partials = 0
        #: Utterances that gave no text: no FinalEvent for them (their VadEvent end still closes them).
        self.empty_finals = 0
        self._interleave = self.schedule.max_hops_per_step == 1
        #: Samples of silence after an utterance's end that its final pass hears (WindowConfig).
        self._pass_silence_samples = int(self.config.window.final_pass_silence_ms * sample_rate / 1000)
        #: The final pass run early, during the hangover, for the end the VAD would report (see _maybe_early_pass).
        self._early: _EarlyPass | None = None
        #: Final passes run during a hangover, and how many of them gave the final (the others were run for a
        #: pause the speech went on after: their compute is the price of the early finals).
        self.early_passes = 0
        self.early_passes_used = 0
        #: The model's part of the final pass computed while the utterance is spoken (None: off, or a model
        #: without it).
        self._prefetch: PassPrefetchModel | None = None
        if self.config.window.final_pass_prefetch and hasattr(model, "prepare_pass") and hasattr(model, "pass_logits"):
            self._prefetch = cast(PassPrefetchModel, model)

    # -- public API ----------------------------------------------------------------------------------------
    @property
    def audio_end_sample(self) -> int:
        return self._history.end

    @property
    def pending_end_sample(self) -> int | None:
        """While an utterance is open and the VAD waits out its hangover: the sample the utterance ends at if
        the speech does not go on (the end its VadEvent will carry); None otherwise."""
        return self.vad.pending_end_sample if self._segment is not None else None

    @property
    def idle(self) -> bool:
        """No utterance is open: until the VAD hears speech, audio only goes through the VAD (the worker
        may then feed it in larger chunks)."""
        return self._segment is None

    def feed(self, chunk: AudioChunk) -> list[Event]:
        if chunk.sample_rate != self.sample_rate:
            raise ValueError(f"the core takes {self.sample_rate} Hz audio, got {chunk.sample_rate} Hz")
        self._history.append(chunk)
        events: list[Event] = []
        piece = self.vad.frame_samples
        for offset in range(0, len(chunk.samples), piece):
            at = chunk.start_sample + min(offset + piece, len(chunk.samples))
            boundaries = self.vad.feed(AudioChunk(chunk.start_sample + offset, chunk.samples[offset:offset + piece],
                                                  chunk.sample_rate))
            for boundary in boundaries:
                if self._interleave and self._segment is not None and not boundary.speech and not self._held():
                    events.extend(self._run_windows(at, final=False))
                events.extend(self._apply(boundary, at))
            if self._segment is not None:
                self._prefetch_pass(at)
                self._maybe_early_pass(at)
            if self._interleave and self._segment is not None and not self._held():
                events.extend(self._run_windows(at, final=False))
        if self._segment is not None and not self._held():
            events.extend(self._run_windows(self._history.end, final=False))
        self._trim()
        return events

    def finish(self) -> list[Event]:
        """End of stream: close the open segment (committing everything) and report stats."""
        events: list[Event] = []
        for boundary in self.vad.flush():
            events.extend(self._apply(boundary, self._history.end))
        events.append(self.stats())
        return events

    def end_utterance(self) -> list[Event]:
        """Close the open utterance now, as if the VAD had ended it at the audio fed so far (without waiting
        for its hangover), and give its final: a pause, or the release of a push-to-talk key. The stream goes
        on; the next speech opens a new utterance. No events when none is open."""
        events: list[Event] = []
        for boundary in self.vad.flush():
            events.extend(self._apply(boundary, self._history.end))
        return events

    # -- internals -----------------------------------------------------------------------------------------
    def _s(self, sample: int) -> float:
        return sample / self.sample_rate

    @property
    def _next_frame(self) -> int:
        """The stitcher's commit point: set when a segment opens, so always an int while one is open."""
        frame = self.stitcher.next_frame
        assert frame is not None, "no segment is open"
        return frame

    def _apply(self, boundary: SpeechBoundary, at: int) -> list[Event]:
        """Apply a VAD boundary decided once audio up to sample `at` had been seen."""
        now_s = self._s(at)
        if boundary.speech:
            start = max(boundary.sample, self._history.start)
            opened = _Segment(self._segment_count, start, self.schedule.first_frame(start))
            self._segment_count += 1
            self._segment = opened
            self._piece_start_s = self._s(start)
            self._split = False
            self.stitcher.reset()
            self.stitcher.next_frame = opened.first_frame
            if log.isEnabledFor(logging.DEBUG):
                log.debug("vad: speech start at sample %d (%.2f s), segment %d, decided at %.2f s", start,
                          self._s(start), opened.segment_id, now_s)
            return [VadEvent(now_s, self.clock(), True, opened.segment_id, sample=start)]
        seg = self._segment
        if seg is None:
            return []
        if log.isEnabledFor(logging.DEBUG):
            log.debug("vad: speech end at sample %d (%.2f s), segment %d, decided at %.2f s", boundary.sample,
                      self._s(boundary.sample), seg.segment_id, now_s)
        events: list[Event] = []
        final = self._full_pass_final(seg, boundary.sample, at)
        if final is None:  # the stitched windows give the final: commit the rest of the utterance first
            events = self._run_windows(boundary.sample, final=True, at=at)
            final = self._final(seg, self.stitcher.tokens, end_s=self._s(boundary.sample), forced=False, at=at)
        else:  # the pass gave it: the last window is not run, but the partials it stood for are counted
            last = self.schedule.next_window(seg.first_frame, self._next_frame, boundary.sample, True)
            if last is not None:
                self.skipped_partials += self._skipped(last)
        if final.text:
            events.append(final)
        else:
            self.empty_finals += 1
            log.debug("final: segment %d has no text: no final", seg.segment_id)
        self.stitcher.reset()
        self._committed_logits = []
        self._segment = None
        self._early = None
        events.append(VadEvent(now_s, self.clock(), False, seg.segment_id, sample=boundary.sample))
        events.append(self.stats())
        return events

    def _run_windows(self, available_end: int, final: bool, at: int | None = None) -> list[Event]:
        """Run the windows that audio up to `available_end` allows; `at`: the audio seen (default: that end)."""
        seg = self._segment
        assert seg is not None
        at = available_end if at is None else at
        events: list[Event] = []
        while True:
            committed = self._next_frame
            window = self.schedule.next_window(seg.first_frame, committed, available_end, final)
            if window is None:
                break
            events.extend(self._step(seg, window, at))
            if final:
                break
        if final and not events:
            return events
        if not final:
            events.extend(self._maybe_force_split(seg, at))
        return events

    def _skipped(self, window: Window) -> int:
        """Partials this window stands for beyond its own: the hops it commits at once (catch-up), or for
        the last window of an utterance the hops that could have been shown before it."""
        s = self.schedule
        frames = window.commit_end_frame - window.commit_start_frame
        if window.final:
            return max(0, (frames - s.lookahead_frames) // s.hop_frames)
        return max(0, frames // s.hop_frames - 1)

    def _step(self, seg: _Segment, window: Window, at: int) -> list[Event]:
        audio = self._history.get(window.start_sample, window.end_sample)
        t0 = time.perf_counter()
        logits = self.model.logits(audio, window.start_sample)
        elapsed = time.perf_counter() - t0
        self.compute_s += elapsed
        self._last_step_ms = elapsed * 1000
        self.windows_run += 1
        skipped = self._skipped(window)
        self.skipped_partials += skipped
        if log.isEnabledFor(logging.DEBUG):
            log.debug("window: segment %d samples [%d, %d) frames %d..%d commit %d..%d%s, %.1f ms%s",
                      seg.segment_id, window.start_sample, window.end_sample, window.first_frame, window.end_frame,
                      window.commit_start_frame, window.commit_end_frame, " (last)" if window.final else "",
                      elapsed * 1000, f", {skipped} partials skipped" if skipped else "")
        expected = window.end_frame - window.first_frame
        if logits.shape[0] < expected:
            raise RuntimeError(f"model returned {logits.shape[0]} frames for a window of {expected}")
        labels = logits[:expected].argmax(axis=-1)
        c0 = window.commit_start_frame - window.first_frame
        c1 = window.commit_end_frame - window.first_frame
        self.stitcher.commit(labels[c0:c1], window.commit_start_frame)
        if self.final_rescorer is not None:
            self._committed_logits.append(logits[c0:c1])
        if window.final:
            return []
        tentative = self.stitcher.tentative(labels[c1:], window.commit_end_frame)
        g = self.geometry
        return [PartialEvent(
            audio_time_s=self._s(at), wall_time_s=self.clock(), segment_id=seg.segment_id,
            committed_text=self.decoder.text(self.stitcher.tokens),
            tentative_text=self._tentative_text(tentative),
            committed_until_s=round(window.commit_end_frame * g.frame_s, 6),
            tentative_until_s=round(window.end_frame * g.frame_s, 6),
        )]

    def _tentative_text(self, tentative: Sequence[TokenSpan]) -> str:
        """What the tentative tokens add to the committed text, verbatim: it starts with a space when it
        begins a new word and without one when it continues the last committed word, so committed_text +
        tentative_text is the whole current line."""
        if not tentative:
            return ""
        committed = self.decoder.text(self.stitcher.tokens)
        whole = self.decoder.text(list(self.stitcher.tokens) + list(tentative))
        if not committed:
            return whole
        return whole[len(committed):] if whole.startswith(committed) else " " + whole

    def _maybe_force_split(self, seg: _Segment, at: int) -> list[Event]:
        """Finalise a very long utterance in pieces at a word boundary; nothing is recomputed or lost."""
        committed_end_s = self._next_frame * self.geometry.frame_s
        if committed_end_s - self._piece_start_s < self.config.vad.max_segment_s:
            return []
        count = self.decoder.complete_word_count(self.stitcher.tokens)
        if count == 0:
            return []
        head = self.stitcher.take_head(count)
        end_s = (head[-1].end_frame + 1) * self.geometry.frame_s
        event = self._final(seg, head, end_s=end_s, forced=True, last_frame=head[-1].end_frame, at=at)
        self._piece_start_s = end_s
        self._split = True
        return [event]

    def _full_pass_possible(self, seg: _Segment, end_sample: int) -> bool:
        limit_s = self.config.window.final_pass_max_s
        return (limit_s > 0 and not self._split
                and self._s(end_sample - self.geometry.frame_start_sample(seg.first_frame)) <= limit_s)

    def _pass_audio(self, seg: _Segment, end_sample: int, available: int) -> np.ndarray | None:
        """The final pass's input for a segment ending at end_sample: all of it from the segment's first frame
        (on the windows' frame grid) plus WindowConfig.final_pass_silence_ms of what followed, as far as
        `available`; None where it cannot run (audio gone, nothing to decode)."""
        start = self.geometry.frame_start_sample(seg.first_frame)
        if start < self._history.start or end_sample <= start:
            return None
        audio = self._history.get(start, min(available, end_sample + self._pass_silence_samples))
        return audio if self.geometry.frames_in(len(audio)) > 0 else None

    def _prefetch_pass(self, at: int) -> None:
        """Give the model the open utterance's audio up to sample `at` to compute part of its final pass
        (PassPrefetchModel): called once per VAD frame, so what it computes depends on the audio alone."""
        seg, prefetch = self._segment, self._prefetch
        if prefetch is None or seg is None or self._held() or not self._full_pass_possible(seg, at):
            return
        start = self.geometry.frame_start_sample(seg.first_frame)
        if start < self._history.start or at <= start:
            return
        t0 = time.perf_counter()
        prefetch.prepare_pass(self._history.get(start, at), start)
        self.compute_s += time.perf_counter() - t0

    def _pass_logits(self, seg: _Segment, audio: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        if self._prefetch is not None:
            raw = self._prefetch.pass_logits(audio, self.geometry.frame_start_sample(seg.first_frame))
        else:
            raw = self.model.logits(audio, None)
        logits = raw[:self.geometry.frames_in(len(audio))]
        elapsed = time.perf_counter() - t0
        self.compute_s += elapsed
        self._last_step_ms = elapsed * 1000
        if log.isEnabledFor(logging.DEBUG):
            log.debug("final pass: segment %d, %.2f s of audio from frame %d, %d frames, %.1f ms", seg.segment_id,
                      self._s(len(audio)), seg.first_frame, len(logits), elapsed * 1000)
        return logits, elapsed

    def _held(self) -> bool:
        """The windows wait while an early final pass stands for the open segment's end: what they would
        commit is the silence after it, and the final will not use them (they catch up at once if the speech
        goes on)."""
        return self._early is not None and self._early.end_sample == self.vad.pending_end_sample

    def _maybe_early_pass(self, at: int) -> None:
        """Run the final pass during the hangover, as soon as its input is complete (the segment's audio and
        the silence it hears after the end the VAD would report): the final is then ready when the hangover
        runs out instead of one pass later. If the speech goes on, the pass is dropped (counted) and the
        final is computed again for the new end; the text is the same either way (the same input)."""
        seg = self._segment
        end = self.vad.pending_end_sample
        if (seg is None or end is None or not self.config.window.final_pass_early
                or (self._early is not None and self._early.end_sample == end)
                or at < end + self._pass_silence_samples or not self._full_pass_possible(seg, end)):
            return
        audio = self._pass_audio(seg, end, at)
        if audio is None:
            return
        logits, elapsed = self._pass_logits(seg, audio)
        text = self.final_rescorer(logits) if self.final_rescorer is not None else None
        self._early = _EarlyPass(seg.segment_id, end, logits, elapsed, text)
        self.early_passes += 1

    def _full_pass_final(self, seg: _Segment, end_sample: int, at: int) -> FinalEvent | None:
        """The final of a whole (unsplit) utterance from one model pass over all of its audio, on the same
        frame grid as the windows (the pass starts at the segment's first frame). The pass also takes some of
        the silence the VAD heard after the utterance before ending it (WindowConfig.final_pass_silence_ms),
        as an offline decode of the recording would: a wav2vec2 model's frames depend on the whole input.
        The pass usually ran already, during the hangover (_maybe_early_pass)."""
        if not self._full_pass_possible(seg, end_sample):
            return None
        early = self._early
        rescored = None
        if early is not None and early.segment_id == seg.segment_id and early.end_sample == end_sample:
            logits, rescored = early.logits, early.text
            self.early_passes_used += 1
            log.debug("final pass: segment %d, run early (%.1f ms during the hangover)", seg.segment_id,
                      early.compute_s * 1000)
        else:
            audio = self._pass_audio(seg, end_sample, at)
            if audio is None:
                return None
            logits, _ = self._pass_logits(seg, audio)
        tokens = collapse(logits.argmax(axis=-1), seg.first_frame, self.model.vocabulary.blank_id).spans
        return self._final(seg, tokens, end_s=self._s(end_sample), forced=False, pass_logits=logits, at=at,
                           rescored=rescored)

    def _final(self, seg: _Segment, tokens: Sequence[TokenSpan], end_s: float, forced: bool, last_frame: int | None = None,
               pass_logits: np.ndarray | None = None, at: int | None = None, rescored: str | None = None) -> FinalEvent:
        """A FinalEvent for `tokens`; the rescorer (if any) gets the final pass's logits when there was one
        (`rescored`: its text for them, already computed during the hangover), else the committed window
        logits up to last_frame."""
        text = self.decoder.text(tokens)
        if pass_logits is not None:
            if rescored is not None:
                text = rescored
            elif self.final_rescorer is not None:
                text = self.final_rescorer(pass_logits)
        elif self.final_rescorer is not None and self._committed_logits:
            frames = np.concatenate(self._committed_logits)
            first = self._next_frame - len(frames)  # global frame of frames[0]
            cut = len(frames) if last_frame is None else last_frame + 1 - first
            text = self.final_rescorer(frames[:cut]) if cut > 0 else ""
            self._committed_logits = [frames[cut:]] if cut < len(frames) else []
        if log.isEnabledFor(logging.DEBUG):
            log.debug("final: segment %d %.2f-%.2f s%s%s: %r", seg.segment_id, self._piece_start_s, end_s,
                      " (full pass)" if pass_logits is not None else " (stitched windows)",
                      " (forced split)" if forced else "", text)
        return FinalEvent(
            audio_time_s=self._s(self._history.end if at is None else at), wall_time_s=self.clock(),
            segment_id=seg.segment_id,
            text=text, words=self.decoder.words(tokens),
            start_s=round(self._piece_start_s, 3), end_s=round(end_s, 3), forced=forced,
            full_pass=pass_logits is not None,
        )

    def stats(self) -> StatsEvent:
        processed_s = self._s(self._history.end)
        return StatsEvent(
            audio_time_s=processed_s, wall_time_s=self.clock(),
            rtf=self.compute_s / processed_s if processed_s > 0 else 0.0,
            step_compute_ms=self._last_step_ms, lag_s=0.0, dropped_samples=0, processed_s=processed_s,
            skipped_partials=self.skipped_partials,
        )

    def _trim(self) -> None:
        if self._segment is None:
            keep_from = self._history.end - self._keep_samples
        else:
            committed = self._next_frame
            first = max(self._segment.first_frame, committed - self.schedule.left_frames)
            if self._full_pass_possible(self._segment, self._history.end):  # the final pass needs it all
                first = self._segment.first_frame
            keep_from = min(self.geometry.frame_start_sample(first), self._history.end - self._keep_samples)
        self._history.trim_before(max(0, keep_from))
