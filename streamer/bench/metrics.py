"""From a run's events to the benchmark's figures.

Time bases. Audio up to sample n of the stream has *arrived* at `t0 + n / 16000` (the moment the sound was
made; capture blocks and queues count as latency). A 20 ms frame g covers samples [320g, 320g + 400), so it
has arrived once sample 320g + 400 has. Events carry the wall time of their emission (`wall_time_s`) on the
same clock.

- partial latency of frame g: first event that shows it (tentative_until_s past it, or the final) minus its
  arrival;
- commit latency: first event that commits it (committed_until_s past it, or the final) minus its arrival;
- final latency: the final event minus the end of the segment's last voiced VAD frame;
- partial instability: share of tentative words (as shown) that differ from the word the utterance ends
  up with at that position.

Segments are taken from an independent pass of the same VAD over the same audio (same framing), which also
gives the last voiced frame and the sample at which the end was detected (used by the baselines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.core.config import VadConfig
from streamer.core.events import FinalEvent, PartialEvent
from streamer.core.vad import VadSegmenter, build_classifier
from streamer.core.windowing import FrameGeometry
from streamer.model.silero import load_silero


@dataclass(frozen=True)
class SegmentTruth:
    index: int
    start_sample: int
    end_sample: int
    #: Stream position when the VAD reported the end (a multiple of the delivery block).
    detected_sample: int
    #: End of the last voiced VAD frame of the segment: the end of speech.
    speech_end_sample: int
    #: Start of its first voiced VAD frame (after the pre-roll).
    speech_start_sample: int = 0

    def frames(self, g: FrameGeometry) -> range:
        """Every frame the recognizer computes for the segment (pre-roll and tail included)."""
        first = -(-self.start_sample // g.stride_samples)
        return range(first, g.frames_complete_before(self.end_sample))

    def speech_mask(self, frames: np.ndarray, g: FrameGeometry) -> np.ndarray:
        """Frames whose centre lies in the voiced span [first voiced frame, last voiced frame]: the frames
        that carry the words (the pre-roll and the tail are there for context and are mostly blank)."""
        centre = frames * g.stride_samples + g.receptive_field_samples // 2
        return (centre >= self.speech_start_sample) & (centre < self.speech_end_sample)

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / 16000


def vad_segments(audio: np.ndarray, config: VadConfig, block_samples: int, classifier=None) -> list[SegmentTruth]:
    """Run the VAD the recognizer uses over `audio` in delivery blocks, recording what it decided."""
    from streamer.core.events import AudioChunk

    voiced: list[bool] = []
    base = classifier or build_classifier(config, silero=load_silero)

    def recording(frame: bytes) -> bool:
        v = base(frame)
        voiced.append(v)
        return v

    vad = VadSegmenter(config, classifier=recording)
    fs = vad.frame_samples
    out: list[SegmentTruth] = []
    start: int | None = None

    def close(end: int, detected: int) -> None:
        nonlocal start
        assert start is not None  # the VAD ends only a segment it started
        last = start
        for j in range(min(len(voiced), end // fs + 1) - 1, -1, -1):
            if voiced[j] and (j + 1) * fs <= end:
                last = (j + 1) * fs
                break
        first = next((j * fs for j in range(start // fs, len(voiced)) if voiced[j] and j * fs >= start), start)
        out.append(SegmentTruth(len(out), start, end, detected, max(last, start), min(first, last)))
        start = None

    for i in range(0, len(audio), block_samples):
        chunk = AudioChunk(i, audio[i:i + block_samples], 16000)
        for b in vad.feed(chunk):
            if b.speech:
                start = b.sample
            else:
                close(b.sample, chunk.end_sample)
    for b in vad.flush():
        close(b.sample, len(audio))
    return out


def percentile_ms(values, q: float) -> float | None:
    return None if len(values) == 0 else round(float(np.percentile(np.asarray(values), q)) * 1000, 1)


@dataclass
class SegmentTiming:
    segment: SegmentTruth
    frames: np.ndarray  # global frame indices
    shown_s: np.ndarray  # wall time each frame was first shown
    committed_s: np.ndarray
    final_s: float | None
    text: str


def _first_cover(frames: np.ndarray, marks: list[tuple[int, float]], fallback: float | None) -> np.ndarray:
    """For each frame, the wall time of the first mark (end_frame, time) with end_frame > frame."""
    out = np.full(len(frames), np.nan)
    best_end = -1
    for end_frame, t in marks:
        if end_frame > best_end:
            sel = (frames >= best_end) & (frames < end_frame) & np.isnan(out)
            out[sel] = t
            best_end = end_frame
    if fallback is not None:
        out[np.isnan(out)] = fallback
    return out


def segment_timings(events, segments: list[SegmentTruth], g: FrameGeometry) -> list[SegmentTiming]:
    fs = g.frame_s
    by_seg: dict[int, list] = {}
    for e in events:
        if isinstance(e, (PartialEvent, FinalEvent)):
            by_seg.setdefault(e.segment_id, []).append(e)
    out = []
    for seg in segments:
        evs = by_seg.get(seg.index, [])
        frames = np.arange(seg.frames(g).start, seg.frames(g).stop)
        partials = [e for e in evs if isinstance(e, PartialEvent)]
        finals = [e for e in evs if isinstance(e, FinalEvent)]
        last = next((f for f in reversed(finals) if not f.forced), finals[-1] if finals else None)
        final_t = last.wall_time_s if last is not None else None
        shown = _first_cover(frames, [(round(p.tentative_until_s / fs), p.wall_time_s) for p in partials], final_t)
        committed = _first_cover(frames, [(round(p.committed_until_s / fs), p.wall_time_s) for p in partials], final_t)
        text = " ".join(f.text for f in finals if f.text)
        out.append(SegmentTiming(seg, frames, shown, committed, final_t, text))
    return out


def instability(events) -> tuple[int, int]:
    """(tentative words shown, of those later changed), over all partials. The line shown is
    committed_text + tentative_text (the tentative text starts without a space when it continues the last
    committed word; that word then counts as tentative too). Each tentative word is compared with the word
    the utterance ends up with at the same position (after any forced finals already emitted)."""
    finals: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, FinalEvent) and e.text:
            finals.setdefault(e.segment_id, []).append(e.text)
    shown = changed = 0
    done: dict[int, int] = {}  # words already finalised (forced pieces) per segment
    for e in events:
        if isinstance(e, FinalEvent):
            done[e.segment_id] = done.get(e.segment_id, 0) + len(e.text.split())
            continue
        if not isinstance(e, PartialEvent) or not e.tentative_text.strip():
            continue
        final_words = " ".join(finals.get(e.segment_id, [])).split()
        committed = e.committed_text.split()
        line = (e.committed_text + e.tentative_text).split()
        continues = bool(committed) and not e.tentative_text[:1].isspace()
        first = len(committed) - 1 if continues else len(committed)
        offset = done.get(e.segment_id, 0)
        for i in range(first, len(line)):
            shown += 1
            j = offset + i
            changed += int(j >= len(final_words) or final_words[j] != line[i])
    return shown, changed


def edit_distance(a, b) -> int:
    """Levenshtein distance between two strings or two lists of words."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:  # a bare GPU machine: the same distance, in Python
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]
    return Levenshtein.distance(a, b)


def fidelity(references: list[str], hypotheses: list[str]) -> dict:
    """CER / WER of hypotheses against references (summed edits over summed reference length) and the
    share of identical pairs. Whitespace is collapsed first: `batch_decode` turns repeated word delimiters
    into repeated spaces, streamer's decoder does not, and neither is a difference a reader sees."""
    references = [" ".join(r.split()) for r in references]
    hypotheses = [" ".join(h.split()) for h in hypotheses]
    chars = sum(len(r) for r in references)
    words = sum(len(r.split()) for r in references)
    ce = sum(edit_distance(r, h) for r, h in zip(references, hypotheses))
    we = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    same = sum(r == h for r, h in zip(references, hypotheses))
    return {
        "cer": round(ce / chars, 5) if chars else None,
        "wer": round(we / words, 5) if words else None,
        "identical_share": round(same / len(references), 4) if references else None,
        "utterances": len(references),
    }
