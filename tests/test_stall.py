"""A stall is a gap, not a lost device: the capture edge measures audio that never came (GapMeter), counts it
apart from dropped audio, says so, and keeps listening. Pure logic and the capture thread on a fake clock here;
the real process under SIGSTOP / SIGCONT and a microphone that goes away are in test_capture.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamer.audio.capture import Capture, GapMeter
from streamer.audio.devices import CaptureSettings, InputDevice
from streamer.audio.ringbuffer import RingBuffer

from helpers import wait_for

RATE = 48000
BLOCK = 960  # 20 ms


def feed(meter: GapMeter, t: float, delivered: int, seconds: float, jitter: float = 0.0, rng=None,
         rate_scale: float = 1.0) -> tuple[float, int, int]:
    """Blocks for `seconds` of real time from `t` (arrival jitter up to `jitter` s); returns (t, delivered,
    gap frames found)."""
    found = 0
    for _ in range(int(seconds / 0.02)):
        t += 0.02
        delivered += int(BLOCK * rate_scale)
        late = float(rng.uniform(0, jitter)) if rng is not None else 0.0
        found += meter.arrived(t + late, delivered)
    return t, delivered, found


def test_steady_audio_with_jitter_and_clock_drift_is_no_gap():
    rng = np.random.default_rng(0)
    meter = GapMeter(RATE)
    _, _, found = feed(meter, 0.0, 0, 120, jitter=0.08, rng=rng)
    assert found == 0
    drifting = GapMeter(RATE)  # the device's clock 500 ppm slow against ours, for an hour
    _, _, found = feed(drifting, 0.0, 0, 3600, rate_scale=1 - 0.0005)
    assert found == 0


def test_a_hole_in_the_audio_is_measured():
    meter = GapMeter(RATE)
    t, n, _ = feed(meter, 0.0, 0, 5)
    t += 2.0  # a device switched by the sound server: two seconds of nothing, then audio again
    t, n, found = feed(meter, t, n, 5)
    assert found == pytest.approx(2.0 * RATE, abs=BLOCK)
    assert meter.gap_frames == found


def test_a_stall_with_a_backlog_counts_only_what_was_lost():
    meter = GapMeter(RATE)
    t, n, _ = feed(meter, 0.0, 0, 4)
    t += 13.0  # SIGSTOP for 13 s; the sound server kept 10 s, delivered at once after SIGCONT
    for _ in range(500):
        t += 0.0005
        n += BLOCK
        meter.arrived(t, n)
    t, n, _ = feed(meter, t, n, 5)
    assert meter.gap_frames == pytest.approx((13.0 + 0.25 - 10.0) * RATE, abs=2 * BLOCK)  # backlog took 0.25 s


def test_a_backlog_that_arrives_slowly_is_not_counted_as_missing():
    """After SIGCONT the callback competes with the model for the CPU: 10 s kept by the sound server arrive
    over 2.5 s. Counting at the first tick would call almost the whole stall missing."""
    meter = GapMeter(RATE)
    t, n, _ = feed(meter, 0.0, 0, 4)
    t += 13.0
    for _ in range(500):  # 500 blocks of 20 ms at 5 ms each
        t += 0.005
        n += BLOCK
        meter.arrived(t, n)
    t, n, _ = feed(meter, t, n, 5)
    assert meter.gap_frames == pytest.approx((13.0 + 2.5 - 10.0) * RATE, abs=2 * BLOCK)


class _Status:
    input_overflow = False


def test_a_stalled_process_is_not_a_lost_device_and_the_gap_is_recorded():
    """The capture thread on a fake clock that jumps 13 s (the process was stopped): before, the device was
    declared lost (it had 'stopped delivering audio' for longer than the stall timeout)."""
    now = [1000.0]
    ring = RingBuffer(16000 * 60)
    settings = CaptureSettings(InputDevice(1, "default", "ALSA", 2, RATE, True), RATE, 1)
    capture = Capture(settings, ring, threading.Event(), stall_timeout_s=8.0)
    capture.clock = lambda: now[0]
    capture._thread.start()
    block = np.full((BLOCK, 1), 0.1, np.float32)

    def deliver(seconds: float) -> None:
        for _ in range(int(seconds / 0.02)):
            now[0] += 0.02
            capture._callback(block, BLOCK, None, _Status())
            wait_for(lambda: capture._queue.empty(), "the capture thread to take the block")

    try:
        deliver(3.0)
        now[0] += 13.0  # stopped; PortAudio kept nothing
        deliver(4.0)
        wait_for(lambda: ring.gaps, "the gap to be recorded", timeout=10)
        assert capture.error is None and capture._thread.is_alive()
        (gap,) = ring.gaps
        assert gap.samples == pytest.approx(13 * 16000, abs=400)
        assert gap.reason.startswith("streamer was stalled for 13.0 s") and "13.0 s of audio missing" in gap.reason
        assert ring.gap_samples == gap.samples and capture.stalls == 1
        assert capture.dropped_samples() == 0 and ring.dropped_samples == 0  # a gap is not a drop
    finally:
        capture.close()
    assert capture.error is None and ring.closed
