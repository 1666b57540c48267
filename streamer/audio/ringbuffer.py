"""A bounded ring buffer of 16 kHz mono audio addressed by absolute sample index.

One writer (capture or file replay) and one reader (the pipeline worker). When the writer would overwrite
audio the reader has not read yet, either the writer waits (`block=True`, file replay as fast as possible)
or the oldest unread audio is lost and counted in `dropped_samples` (live capture: never block the edge).

The writer also reports audio that never came (`record_gap`: the process was stalled, the device paused or
was switched): counted in `gap_samples`, one `Gap` each, read by the worker for its stats and notices. The
sample axis stays contiguous: a gap is a count, not silence written into the ring.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.core.events import AudioChunk


@dataclass(frozen=True)
class Gap:
    """Audio the source never delivered, noticed once the stream had reached `at_sample`."""

    at_sample: int
    samples: int
    #: What the user is told ("the process was stalled for 13.0 s", "no audio from [1] default for 2.0 s").
    reason: str


class RingBuffer:
    def __init__(self, capacity_samples: int, sample_rate: int = MODEL_SAMPLE_RATE) -> None:
        if capacity_samples <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity_samples
        self.sample_rate = sample_rate
        self._data = np.zeros(capacity_samples, dtype=np.float32)
        self._write_pos = 0  # absolute index one past the newest sample
        self._read_pos = 0  # absolute index of the oldest unread sample
        self._closed = False
        self.dropped_samples = 0
        self.gap_samples = 0
        self.gaps: list[Gap] = []  # appended by the writer only; read by index
        self._cond = threading.Condition()
        self._woken = False
        #: Unread samples the waiting reader asked for (`read(min_samples=...)`): writes that leave fewer do
        #: not wake it (in silence the worker reads several capture blocks at once: fewer thread wake-ups).
        self._want = 1

    # -- writer side -------------------------------------------------------------------------------------
    def write(self, samples: np.ndarray, block: bool = False, timeout: float | None = None) -> int:
        """Append samples; returns how many unread samples were dropped to make room (0 when blocking)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        dropped = 0
        with self._cond:
            if block:
                # Write in pieces that fit, waiting for the reader in between.
                offset = 0
                while offset < len(samples):
                    if self._closed:  # the reader is gone: nobody will make room
                        return 0
                    room = self.capacity - (self._write_pos - self._read_pos)
                    if room <= 0:
                        if not self._cond.wait(timeout=timeout) and timeout is not None:
                            raise TimeoutError("ring buffer reader did not keep up")
                        continue
                    piece = samples[offset : offset + room]
                    self._store(piece)
                    offset += len(piece)
                    self._notify_reader()
                return 0
            dropped = max(0, (self._write_pos - self._read_pos) + len(samples) - self.capacity)
            if len(samples) > self.capacity:  # only the newest capacity samples can be kept
                self._write_pos += len(samples) - self.capacity
                samples = samples[-self.capacity :]
            self._store(samples)
            if self._read_pos < self._write_pos - self.capacity:
                self._read_pos = self._write_pos - self.capacity
            self.dropped_samples += dropped
            self._notify_reader()
        return dropped

    def _notify_reader(self) -> None:
        """Wake the reader once it has what it waits for (the caller holds the condition)."""
        if self._write_pos - self._read_pos >= self._want:
            self._cond.notify_all()

    def record_gap(self, samples: int, reason: str) -> Gap:
        """Audio that never arrived (counted apart from `dropped_samples`)."""
        gap = Gap(self._write_pos, max(0, int(samples)), reason)
        with self._cond:
            self.gap_samples += gap.samples
            self.gaps.append(gap)
        return gap

    def _store(self, samples: np.ndarray) -> None:
        n = len(samples)
        if n == 0:
            return
        start = self._write_pos % self.capacity
        first = min(n, self.capacity - start)
        self._data[start : start + first] = samples[:first]
        if first < n:
            self._data[: n - first] = samples[first:]
        self._write_pos += n

    def close(self) -> None:
        """No more audio will come; readers waiting are woken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """A reader waiting in `read` returns now (with what there is, perhaps nothing): it has something
        else to do (a pause to act on)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    # -- reader side -------------------------------------------------------------------------------------
    @property
    def write_pos(self) -> int:
        return self._write_pos

    @property
    def read_pos(self) -> int:
        return self._read_pos

    @property
    def closed(self) -> bool:
        return self._closed

    def unread(self) -> int:
        with self._cond:
            return self._write_pos - self._read_pos

    def shortfall(self) -> int:
        """Samples a reader waiting in `read(min_samples=...)` still waits for: writes before that much has
        come do not wake it. 0 when no reader waits, or it waits for any audio."""
        with self._cond:
            if self._want <= 1:
                return 0
            return max(0, self._want - (self._write_pos - self._read_pos))

    def read(self, max_samples: int | None = None, timeout: float | None = None, min_samples: int = 1) -> AudioChunk:
        """Wait for unread audio (at least `min_samples` of it, or close, `wake` or the timeout: then what
        there is), then return it as a chunk and mark it read. The chunk's start may jump forward past audio
        that was dropped. An empty chunk means closed (or timeout)."""
        with self._cond:
            want = max(1, min_samples)
            if self._write_pos - self._read_pos < want and not self._closed and not self._woken:
                self._want = want
                try:
                    self._cond.wait(timeout=timeout)
                finally:
                    self._want = 1
            self._woken = False
            start = self._read_pos
            end = self._write_pos if max_samples is None else min(self._write_pos, start + max_samples)
            out = self._slice(start, end)
            self._read_pos = end
            self._cond.notify_all()
            return AudioChunk(start, out, self.sample_rate)

    def _slice(self, start: int, end: int) -> np.ndarray:
        n = end - start
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        if start < self._write_pos - self.capacity:
            raise IndexError(f"samples from {start} are no longer in the ring buffer")
        s = start % self.capacity
        first = min(n, self.capacity - s)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._data[s : s + first]
        if first < n:
            out[first:] = self._data[: n - first]
        return out
