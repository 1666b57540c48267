"""Replayed audio as a Source: 16 kHz blocks (a file, or the benchmark's clips) written into the ring buffer
from a thread of their own, either as fast as the worker reads or paced by the clock like a microphone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from streamer.audio.files import AudioInput, open_audio
from streamer.audio.resample import StreamingResampler
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.threadname import name_this_thread

REPLAY_MODES = ("fast", "realtime")
#: close() waits this long for the replay thread to notice the stop.
CLOSE_TIMEOUT_S = 5.0


class BlockReplay:
    """Feeds 16 kHz blocks into the ring buffer from its own thread: `fast` (blocking writes, as fast as the
    worker reads) or `realtime` (paced by the clock like a microphone; never blocks, so a worker that falls
    behind loses the oldest audio, counted by the ring buffer). `arrival_time(n)` is when audio up to sample n
    had arrived; `late_s` is how late the latest-delivered block was at worst (scheduling noise)."""

    def __init__(self, blocks: Iterable[np.ndarray], ring: RingBuffer, mode: str, stop: threading.Event,
                 clock: Callable[[], float] = time.time, name: str = "replay") -> None:
        if mode not in REPLAY_MODES:
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

    @property
    def total_samples(self) -> int | None:
        return None

    def dropped_samples(self) -> int:
        return 0  # a replay never loses audio itself; a realtime replay's overruns are the ring's drops

    def input_overflows(self) -> int:
        return 0

    def nonfinite_samples(self) -> int:
        return 0  # blocks already at 16 kHz were checked where they were made

    def arrival_time(self, sample: int) -> float:
        """Wall time at which audio up to `sample` had arrived (realtime pacing)."""
        assert self.started_at is not None
        return self.started_at + sample / MODEL_SAMPLE_RATE

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop replaying and close the ring (which also wakes a fast replay waiting for room)."""
        self.stop.set()
        self.ring.close()
        if self._thread.is_alive():
            self._thread.join(CLOSE_TIMEOUT_S)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        name_this_thread()
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
        except BaseException as exc:  # reported by the session as one line
            self.error = exc
        finally:
            self.ring.close()


class FileReplay(BlockReplay):
    """Replays an audio input (a file, a FIFO, standard input; any rate, resampled to 16 kHz as it is read)
    into the ring buffer. Pass an AudioInput opened by the caller (an input is read once), or a path."""

    def __init__(self, source: AudioInput | str | Path, ring: RingBuffer, mode: str, stop: threading.Event,
                 clock: Callable[[], float] = time.time) -> None:
        self.input = source if isinstance(source, AudioInput) else open_audio(source)
        self.info = self.input.info
        self.resampler = StreamingResampler(self.info.sample_rate, MODEL_SAMPLE_RATE)
        super().__init__(self.input.iter_16k(self.resampler), ring, mode, stop, clock, name="file-replay")

    def nonfinite_samples(self) -> int:
        return self.resampler.nonfinite_samples

    @property
    def total_samples(self) -> int | None:
        if self.info.frames is None:
            return None  # a stream of unknown length
        return int(round(self.info.frames * MODEL_SAMPLE_RATE / self.info.sample_rate))


def paced_blocks(audio: np.ndarray, block_samples: int) -> Iterable[np.ndarray]:
    """`audio` cut into capture-sized blocks."""
    return (audio[i:i + block_samples] for i in range(0, len(audio), block_samples))
