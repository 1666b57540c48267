"""Overload is visible as it happens: with a model slower than real time, stats arrive while a long model step
runs, the partials merged by catching up are counted, the caption screen warns, drops and gaps are told as
notices (rate-limited) and finals stay complete. A hand-built slow model through Session and Worker."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from streamer.app.session import Session, SessionOptions
from streamer.app.worker import DROP_NOTICE_INTERVAL_S, Worker, notice_printer
from streamer.audio.replay import BlockReplay, paced_blocks
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE, Config, VadConfig
from streamer.core.events import Event, FinalEvent, NoticeEvent, StatsEvent
from streamer.core.vad import VadSegmenter
from streamer.ui.state import LiveState
from streamer.ui.view import footer

from helpers import LocalModel, direct_finals, energy_recognizer, energy_speech, utterances

SR = MODEL_SAMPLE_RATE
DEADLINE_S = 30.0


class SlowModel(LocalModel):
    """Each model call takes `delay_s` (a starved CPU); the calls' wall-clock spans are kept."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.spans: list[tuple[float, float]] = []

    def logits(self, audio, start_sample=None):
        t0 = time.time()
        time.sleep(self.delay_s)  # stands for compute, not a wait of the test
        out = super().logits(audio, start_sample)
        self.spans.append((t0, time.time()))
        return out


def test_a_model_slower_than_real_time_shows_lag_skips_and_warnings_as_they_happen():
    audio = utterances(11, 1, speech_s=1.6, pause_s=0.3)
    model = SlowModel(0.6)  # one window per 0.6 s of wall time, a hop is 0.16 s of audio
    config = Config(vad=VadConfig(confirm="off"))
    events: list[Event] = []
    state = LiveState("slow model", "replay")
    seen: list[tuple[tuple[str, ...], str]] = []  # (warnings, footer) after each stats event

    def ui(event: Event) -> None:
        events.append(event)
        state.apply(event)
        if isinstance(event, StatsEvent):
            snap = state.snapshot(event.wall_time_s)
            seen.append((snap.warnings, " ".join(t.plain for t in footer(snap))))

    source = lambda ring, stop: BlockReplay(paced_blocks(audio, 1600), ring, "realtime", stop)  # noqa: E731
    session = Session(model, source, SessionOptions(config, catch_up=True), handlers=[ui])
    session.recognizer.vad = VadSegmenter(config.vad, classifier=energy_speech)
    with session:
        assert session.wait(DEADLINE_S)
    session.raise_errors()

    stats = [e for e in events if isinstance(e, StatsEvent)]
    # Stats while a model step runs (before: only between steps, so nothing for the length of a long one) ...
    during = [s for s in stats if any(a < s.wall_time_s < b for a, b in model.spans)]
    assert during, "no stats event while the model was busy"
    assert any(s.lag_s > 0.3 for s in during)  # ... showing the audio waiting, the chunk in the model included
    # ... partials merged by catching up, counted and rising ...
    skipped = [s.skipped_partials for s in stats]
    assert skipped == sorted(skipped) and skipped[-1] > 0
    # ... and the caption screen says so while it happens.
    assert any(any(w.startswith("catching up:") for w in warnings) for warnings, _ in seen), seen
    assert any(f"skipped {n}" in line for (_, line), n in zip(seen, skipped) if n)
    # Finals stay complete.
    assert [e.text for e in events if isinstance(e, FinalEvent)] == direct_finals(audio)


def test_drops_are_told_when_they_start_at_most_once_per_interval():
    clock = itertools.count(0.0, 0.5).__next__  # every call half a second later
    ring = RingBuffer(SR)
    told: list[str] = []
    worker = Worker(energy_recognizer(), ring, [notice_printer(told.append)], clock=clock)
    stats = StatsEvent(0.0, 0.0, 0.1, 1.0, 0.0, 0)
    worker.publish([stats])
    assert told == []  # nothing lost yet
    for _ in range(12):  # the ring overflows on every write: drops grow all along
        ring.write(np.zeros(SR // 2, np.float32))
        ring.write(np.zeros(SR, np.float32))
        worker.publish([stats])
    # 12 reports at two clock calls each: 12 s of fake time, so one line when the drops start and then at
    # most one per DROP_NOTICE_INTERVAL_S
    assert 2 <= len(told) <= 1 + 12 / DROP_NOTICE_INTERVAL_S
    assert all(line.startswith("streamer: warning: processing fell behind: ") for line in told)
    assert "audio dropped so far" in told[0]


def test_gaps_recorded_by_the_source_are_told_and_counted():
    ring = RingBuffer(SR)
    events: list[Event] = []
    worker = Worker(energy_recognizer(), ring, [events.append])
    ring.write(np.zeros(800, np.float32))
    ring.record_gap(13 * SR, "streamer was stalled for 13.0 s (stopped, suspended or starved of CPU): 13.0 s of "
                             "audio missing; listening again")
    worker.publish([StatsEvent(0.05, 1.0, 0.1, 1.0, 0.0, 0)])
    worker.publish([StatsEvent(0.10, 2.0, 0.1, 1.0, 0.0, 0)])
    notices = [e for e in events if isinstance(e, NoticeEvent)]
    assert [n.kind for n in notices] == ["gap"]  # told once
    stats = [e for e in events if isinstance(e, StatsEvent)]
    assert all(s.gap_samples == 13 * SR and s.gaps == 1 for s in stats)

    state = LiveState("m", "mic")
    for e in events:
        state.apply(e)
    snap = state.snapshot(2.0)
    assert any("stalled for 13.0 s" in n for n in snap.notices)
    assert any(w.startswith("audio missing: 13.00 s in 1 gap") for w in snap.warnings)
    assert "gaps 1 (13.0 s)" in " ".join(t.plain for t in footer(snap))


def test_the_stats_ticker_ends_with_the_worker():
    ring = RingBuffer(SR)
    ring.close()
    worker = Worker(energy_recognizer(), ring, [])
    worker.start()
    assert worker.finished.wait(DEADLINE_S)
    worker._ticker.join(DEADLINE_S)
    assert not worker._ticker.is_alive()
    assert threading.active_count() < 50
