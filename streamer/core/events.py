"""Frozen dataclasses passed between stages. Times on the audio axis are seconds from the stream start
(`*_s`); wall-clock times come from the pipeline's clock (`wall_time_s`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioChunk:
    """Mono float32 audio at `sample_rate`, starting at absolute sample index `start_sample`."""

    start_sample: int
    samples: np.ndarray
    sample_rate: int

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)


@dataclass(frozen=True)
class SpeechBoundary:
    """A VAD decision on the 16 kHz sample axis: speech starts (pre-roll included) or ends (tail included)."""

    speech: bool
    sample: int


@dataclass(frozen=True)
class Window:
    """One model step: audio [start_sample, end_sample) whose frames [commit_start_frame, commit_end_frame)
    are committed and [commit_end_frame, end_frame) are tentative. Frame indices are global."""

    start_sample: int
    end_sample: int
    first_frame: int
    commit_start_frame: int
    commit_end_frame: int
    end_frame: int
    final: bool


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Event:
    """Base of everything the core emits. `audio_time_s`: how much audio the core had seen when it emitted
    this; `wall_time_s`: the pipeline clock at emission."""

    audio_time_s: float
    wall_time_s: float


@dataclass(frozen=True)
class VadEvent(Event):
    speech: bool
    segment_id: int
    #: The boundary on the 16 kHz sample axis: where the utterance starts (pre-roll included) or ends (tail
    #: included); with the end's audio_time_s it gives the span the final pass decodes (a second model
    #: decoding the utterance, streamer.app.finals, takes the same span). -1: not given.
    sample: int = -1


@dataclass(frozen=True)
class PartialEvent(Event):
    """The current line: committed text (final for this segment) and the tentative tail (may change).
    `tentative_text` is appended verbatim: it starts with a space when it begins a new word and without one
    when it continues the last committed word."""

    segment_id: int
    committed_text: str
    tentative_text: str
    #: Audio up to here is committed; up to `tentative_until_s` is shown tentatively.
    committed_until_s: float
    tentative_until_s: float

    @property
    def text(self) -> str:
        return (self.committed_text + self.tentative_text).strip()


@dataclass(frozen=True)
class FinalEvent(Event):
    segment_id: int
    text: str
    words: tuple[Word, ...]
    start_s: float
    end_s: float
    #: True when a long utterance was finalised in pieces (max segment length) rather than at a pause.
    forced: bool = False
    #: True when the text comes from one model pass over the whole utterance (WindowConfig.final_pass_max_s)
    #: rather than from the stitched windows.
    full_pass: bool = False
    #: Set when another model wrote `text` (the Whisper final pass, --final-model): the CTC model's text of
    #: the same audio, kept for comparison.
    ctc_text: str | None = None
    #: The two texts share almost nothing (FinalModelConfig.disagreement_below): one of them misheard.
    disagreement: bool = False


@dataclass(frozen=True)
class LevelEvent(Event):
    """Input level of the latest block, for the meter."""

    rms_dbfs: float
    peak_dbfs: float


@dataclass(frozen=True)
class StatsEvent(Event):
    #: Model compute time / audio duration processed so far.
    rtf: float
    #: Compute time of the latest model step.
    step_compute_ms: float
    #: Captured audio not yet processed by the worker.
    lag_s: float
    #: Audio lost because a bounded buffer was full (capture queue + ring buffer), in 16 kHz samples.
    dropped_samples: int
    #: PortAudio input-overflow flags seen.
    input_overflows: int = 0
    #: Audio processed so far.
    processed_s: float = 0.0
    #: NaN / Inf input samples replaced with zeros where the audio entered the 16 kHz path.
    nonfinite_samples: int = 0
    #: Audio the input never delivered (the process was stalled or suspended, or the device paused or was
    #: switched), in 16 kHz samples, measured from the wall-clock time it was missing. Not in dropped_samples.
    gap_samples: int = 0
    #: How many such gaps (stalls, device interruptions) there were.
    gaps: int = 0
    #: Partials not shown while the worker caught up (several hops committed in one window); finals are
    #: never skipped.
    skipped_partials: int = 0
    #: CPU threads the model steps run with now (chosen at run time; 0: not chosen by streamer).
    threads: int = 0


@dataclass(frozen=True)
class NoticeEvent(Event):
    """Something the user should hear about as it happens, not only at exit: `kind` is "gap" (audio missing:
    a stall or a device interruption) or "dropped" (processing fell behind and audio was lost)."""

    kind: str
    message: str
