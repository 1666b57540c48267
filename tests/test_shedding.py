"""Work shed under load (streamer.app.worker.HopGovernor): pure logic over step times."""

from __future__ import annotations

from streamer.app.worker import HopGovernor
from streamer.core.config import SHED_STEPS, WindowConfig
from streamer.core.windowing import FrameGeometry, WindowSchedule

GEOMETRY = FrameGeometry.from_conv((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), 16000)


def governed() -> tuple[WindowSchedule, HopGovernor]:
    schedule = WindowSchedule(GEOMETRY, WindowConfig(hop_ms=160), max_hops_per_step=4)  # the step times below are at 160 ms
    return schedule, HopGovernor(schedule)


def steps(gov: HopGovernor, step_ms: float, n: int) -> None:
    s = gov.schedule
    for _ in range(n):
        gov.observe(step_ms, s.left_frames + s.hop_frames + s.lookahead_frames, 20.0)


def test_keeps_the_hop_on_an_idle_machine_and_lengthens_it_beside_a_busy_core():
    schedule, gov = governed()
    assert schedule.hop_frames == 8  # 160 ms
    steps(gov, 88.0, 4 * SHED_STEPS)  # base int8, two threads, idle (BENCHMARKS.md)
    assert schedule.hop_frames == 8 and gov.shed_partials == 0
    steps(gov, 108.0, 4 * SHED_STEPS)  # one thread, idle or beside a busy core: still fits the hop
    assert schedule.hop_frames == 8 and gov.shed_partials == 0
    steps(gov, 150.0, SHED_STEPS)  # a slowed step that no longer fits 0.85 of the hop
    assert schedule.hop_frames in (9, 10, 11)
    steps(gov, 150.0, 40)
    assert gov.shed_partials >= 40 * (schedule.hop_frames / 8 - 1) - 1, "the partials not shown are counted"
    steps(gov, 400.0, 2 * SHED_STEPS)  # far too slow: at most twice the hop (catch-up merges the rest)
    assert schedule.hop_frames == 16
    steps(gov, 80.0, 3 * SHED_STEPS)
    assert schedule.hop_frames == 8, "back to the configured hop once steps are fast"


def test_a_session_that_does_not_catch_up_has_no_governor():
    from streamer.app.worker import Worker
    from streamer.audio.ringbuffer import RingBuffer
    from streamer.core.config import Config
    from streamer.core.recognizer import Recognizer

    from helpers import LocalModel

    fast = Worker(Recognizer(LocalModel(), Config(), max_hops_per_step=1), RingBuffer(16000 * 5))
    assert fast.governor is None
    live = Worker(Recognizer(LocalModel(), Config(), max_hops_per_step=4), RingBuffer(16000 * 5))
    assert live.governor is not None
