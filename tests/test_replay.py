"""BlockReplay (streamer.audio.replay): realtime pacing against the clock, fast mode's lossless blocking
writes, and close()."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from streamer.audio.replay import BlockReplay, paced_blocks
from streamer.audio.ringbuffer import RingBuffer

from helpers import wait_for

SR = 16000


class FakeTime:
    """A clock and a stop event in one: waiting on the event moves the clock on by the time waited, so a
    realtime replay runs instantly while every write can be checked against the time it was due."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.waits: list[float] = []
        self._set = False

    def __call__(self) -> float:
        return self.now

    # the threading.Event side the replay uses
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None and timeout > 0
        self.waits.append(timeout)
        self.now += timeout
        return self._set


class RecordingRing(RingBuffer):
    """Notes the clock and how much audio had been delivered at each write."""

    def __init__(self, capacity: int, clock) -> None:
        super().__init__(capacity)
        self.clock = clock
        self.writes: list[tuple[float, int]] = []

    def write(self, samples, block=False, timeout=None):
        dropped = super().write(samples, block, timeout)
        self.writes.append((self.clock(), self.write_pos))
        return dropped


def test_realtime_never_delivers_audio_before_the_clock_says_it_was_spoken():
    fake = FakeTime()
    ring = RecordingRing(20 * SR, fake)
    audio = np.random.default_rng(0).normal(0, 0.1, 3 * SR + 123).astype(np.float32)
    replay = BlockReplay(paced_blocks(audio, 1600), ring, "realtime", fake, clock=fake)
    replay.start()
    replay.join(10)
    assert replay.error is None and ring.closed
    assert replay.samples_written == len(audio) == ring.write_pos
    t0 = replay.started_at
    assert t0 == 1000.0
    for when, delivered in ring.writes:
        assert delivered <= (when - t0) * SR + 1e-3  # never ahead of the clock
        assert delivered >= (when - t0) * SR - 1600  # and not a block behind it (the clock only waits)
    assert fake.now - t0 == pytest.approx(len(audio) / SR)  # paced over exactly the audio's duration
    assert replay.late_s == 0.0
    assert ring.dropped_samples == 0
    assert replay.arrival_time(SR) == t0 + 1.0


def test_realtime_with_the_real_clock_delivers_no_faster_than_real_time():
    audio = np.zeros(SR // 2, np.float32)  # 0.5 s in 50 ms blocks
    ring = RingBuffer(SR)
    stop = threading.Event()
    replay = BlockReplay(paced_blocks(audio, 800), ring, "realtime", stop, clock=time.monotonic)
    t0 = time.monotonic()  # before the replay's own start: elapsed since t0 bounds its elapsed time
    replay.start()
    seen = []
    while not ring.closed:
        written = replay.samples_written
        elapsed = time.monotonic() - t0
        assert written <= (elapsed + 0.002) * SR, (written, elapsed)  # 2 ms for a wait that wakes early
        seen.append(written)
        ring.read(timeout=0.01)
    replay.join(5)
    assert replay.samples_written == len(audio)
    assert time.monotonic() - t0 >= 0.5 - 1e-3
    assert len(set(seen)) > 3  # it was watched while it delivered, not only at the end


def test_fast_mode_never_drops_with_a_small_ring_and_a_slow_reader():
    audio = np.random.default_rng(1).normal(0, 0.1, 5 * SR).astype(np.float32)
    ring = RingBuffer(1000)  # far smaller than one block: every write has to wait for the reader
    stop = threading.Event()
    replay = BlockReplay(paced_blocks(audio, 3000), ring, "fast", stop)
    replay.start()
    deadline = time.monotonic() + 10
    while ring.unread() < ring.capacity:  # the writer fills the ring before anything is read, then waits
        assert time.monotonic() < deadline and replay.error is None, "the writer never filled the ring"
        time.sleep(0.001)
    got = []
    while True:
        chunk = ring.read(max_samples=97, timeout=1.0)  # a slow reader: small pieces
        if not len(chunk.samples) and ring.closed and not ring.unread():
            break
        assert chunk.start_sample == sum(len(c) for c in got)  # no jump: nothing was dropped
        got.append(chunk.samples)
    replay.join(5)
    assert replay.error is None and ring.dropped_samples == 0
    assert np.array_equal(np.concatenate(got), audio)


def test_close_stops_a_realtime_replay_waiting_for_its_next_block_and_closes_the_ring():
    pulled: list[int] = []

    def blocks():
        for i in itertools.count():
            pulled.append(i)
            yield np.zeros(10 * SR if i else 160, np.float32)  # the second block is due 10 s later

    ring = RingBuffer(SR)
    stop = threading.Event()
    replay = BlockReplay(blocks(), ring, "realtime", stop, clock=time.monotonic)
    replay.start()
    wait_for(lambda: replay.samples_written == 160 and len(pulled) == 2, "the first block and the wait for the next")
    t = time.monotonic()
    replay.close()
    assert time.monotonic() - t < 4.0  # woken by the stop, not by the 10 s block coming due
    assert stop.is_set() and ring.closed
    assert not replay._thread.is_alive()
    assert replay.samples_written == 160 and pulled == [0, 1]
    replay.close()  # again: harmless


def test_close_stops_a_fast_replay_whose_reader_keeps_reading():
    ring = RingBuffer(SR)
    stop = threading.Event()
    replay = BlockReplay((np.zeros(1600, np.float32) for _ in itertools.count()), ring, "fast", stop)
    replay.start()
    wait_for(lambda: replay.samples_written >= SR // 2, "half a second of audio")
    reader_done = threading.Event()

    def drain() -> None:
        while not (ring.closed and not ring.unread()):
            ring.read(timeout=0.05)
        reader_done.set()

    threading.Thread(target=drain, daemon=True).start()
    replay.close()
    assert ring.closed and reader_done.wait(5)
    assert not replay._thread.is_alive()
    assert replay.error is None


def test_close_stops_a_fast_replay_whose_reader_is_gone():
    ring = RingBuffer(SR)
    stop = threading.Event()
    replay = BlockReplay((np.zeros(1600, np.float32) for _ in itertools.count()), ring, "fast", stop)
    replay.start()
    wait_for(lambda: ring.unread() == ring.capacity, "the ring to fill")  # the writer now waits for room
    t = time.monotonic()
    threading.Thread(target=replay.close, daemon=True).start()
    wait_for(lambda: ring.closed and not replay._thread.is_alive(), "the replay thread to end", timeout=2)
    assert time.monotonic() - t < 2.0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="fast or realtime"):
        BlockReplay([], RingBuffer(10), "slow", threading.Event())
