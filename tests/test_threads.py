"""The thread choice at run time (streamer.model.runtime.ThreadTuner): pure logic over step times."""

from __future__ import annotations

from streamer.core.config import THREAD_PROBE_EVERY, THREAD_PROBE_STEPS
from streamer.model.runtime import ThreadTuner

WINDOW = 19920  # samples of a steady window


def drive(tuner: ThreadTuner, cost_ms: dict[int, float], steps: int) -> list[int]:
    """Feed `steps` steps whose time depends on the thread count running them; returns the counts used."""
    used = []
    for _ in range(steps):
        n = tuner.running
        used.append(n)
        tuner.observe(WINDOW, cost_ms[n] / 1000)
    return used


def test_moves_to_one_thread_when_a_core_gets_busy_and_back_when_it_is_free():
    tuner = ThreadTuner(cpus=2, threads=2)
    idle = {1: 104.0, 2: 88.0}
    busy = {1: 103.0, 2: 205.0}  # BENCHMARKS.md, thread settings: two threads beside a busy core
    drive(tuner, idle, 3 * THREAD_PROBE_EVERY)
    assert tuner.threads == 2, "on an idle machine two threads are faster: probes keep them"
    used = drive(tuner, busy, 2 * THREAD_PROBE_STEPS + 1)
    assert tuner.threads == 1, "a slowdown triggers a probe at once, and one thread wins"
    assert used.count(2) <= 2 * THREAD_PROBE_STEPS
    drive(tuner, busy, 3 * THREAD_PROBE_EVERY)
    assert tuner.threads == 1
    drive(tuner, idle, 2 * THREAD_PROBE_EVERY + 2 * THREAD_PROBE_STEPS)
    assert tuner.threads == 2, "the periodic probe finds the free core again"
    assert tuner.changes == 2


def test_no_switch_within_the_margin_and_fixed_never_moves():
    tuner = ThreadTuner(cpus=2, threads=2)
    drive(tuner, {1: 95.0, 2: 100.0}, 5 * THREAD_PROBE_EVERY)
    assert tuner.threads == 2 and tuner.changes == 0
    fixed = ThreadTuner(cpus=2, threads=2, fixed=True)
    drive(fixed, {1: 10.0, 2: 500.0}, 3 * THREAD_PROBE_EVERY)
    assert fixed.threads == 2 and fixed.running == 2
    assert "2 threads of 2 CPUs (fixed)" == fixed.description


def test_one_cpu_never_probes():
    tuner = ThreadTuner(cpus=1, threads=1)
    assert drive(tuner, {1: 300.0}, 2 * THREAD_PROBE_EVERY) == [1] * (2 * THREAD_PROBE_EVERY)
