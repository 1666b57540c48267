"""The worker loop (streamer.app.worker.Worker) over a ring buffer and a hand-built model: no devices, no torch.

The recognizer's VAD is an energy threshold (helpers.energy_speech) and its model the receptive-field
LocalModel, so finals depend only on the audio, never on how the worker happened to chunk it."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from streamer.app.worker import Worker
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.core.events import Event, FinalEvent, LevelEvent, NoticeEvent, PartialEvent, StatsEvent, VadEvent
from streamer.errors import SinkError

from helpers import Recorder, direct_finals, energy_recognizer, speech_like, utterances, wait_for

SR = MODEL_SAMPLE_RATE
DEADLINE_S = 20.0


def run_worker(worker: Worker) -> None:
    worker.start()
    assert worker.finished.wait(DEADLINE_S), "worker did not finish"
    assert worker.join(DEADLINE_S)
    assert worker.error is None, worker.error


def test_drains_the_closed_ring_and_publishes_finish():
    audio = utterances(1, 3)
    expected = direct_finals(audio)
    assert len(expected) == 3 and all(expected), expected  # the fixture produces three non-empty finals

    ring = RingBuffer(len(audio) + 1)
    ring.write(audio)
    ring.close()  # closed before the worker even starts: it must still read everything
    rec = Recorder()
    recognizer = energy_recognizer()
    worker = Worker(recognizer, ring, [rec])
    run_worker(worker)

    assert ring.unread() == 0 and recognizer.audio_end_sample == len(audio)
    assert [e.text for e in rec.of(FinalEvent)] == expected
    last = rec.events[-1]  # recognizer.finish() ends with its stats, completed by the worker
    assert isinstance(last, StatsEvent)
    assert last.processed_s == pytest.approx(len(audio) / SR) and last.lag_s == 0.0
    speech = [e.speech for e in rec.of(VadEvent)]
    assert speech == [True, False] * 3


def test_drains_audio_written_while_it_runs_and_finishes_the_open_utterance():
    """Audio that ends in the middle of speech: the source closes the ring, the worker reads what is left and
    recognizer.finish() closes the utterance with a final."""
    audio = np.concatenate([np.zeros(SR // 2, np.float32), speech_like(7, 2.0)])  # no pause at the end
    expected = direct_finals(audio)
    assert len(expected) == 1 and expected[0]

    ring = RingBuffer(len(audio))
    rec = Recorder()
    recognizer = energy_recognizer()
    worker = Worker(recognizer, ring, [rec])
    worker.start()
    for i in range(0, len(audio), 1600):
        ring.write(audio[i:i + 1600], block=True)
    ring.close()
    assert worker.finished.wait(DEADLINE_S) and worker.error is None
    assert recognizer.audio_end_sample == len(audio)
    assert [e.text for e in rec.of(FinalEvent)] == expected
    assert rec.of(FinalEvent)[0].end_s == pytest.approx(len(audio) / SR, abs=0.05)
    assert isinstance(rec.events[-1], StatsEvent)


def test_paused_audio_is_silence_to_the_recognizer_and_text_resumes_after():
    paused_part = utterances(3, 2)  # would give two finals if it were heard
    heard_part = utterances(5, 1)
    assert len(direct_finals(paused_part)) == 2
    expected_after = direct_finals(heard_part)
    assert len(expected_after) == 1 and expected_after[0]

    ring = RingBuffer(len(paused_part) + len(heard_part))
    paused = threading.Event()
    paused.set()
    rec = Recorder()
    recognizer = energy_recognizer()
    worker = Worker(recognizer, ring, [rec], paused=paused, clock=itertools.count().__next__)  # meter every read
    worker.start()
    ring.write(paused_part)
    # every paused sample has reached the recognizer before the pause ends
    wait_for(lambda: recognizer.audio_end_sample >= len(paused_part), "the paused audio to be processed")
    pause_end_s = len(paused_part) / SR
    paused.clear()
    ring.write(heard_part)
    ring.close()
    assert worker.finished.wait(DEADLINE_S) and worker.error is None

    early = [e for e in rec.events if isinstance(e, (FinalEvent, PartialEvent, VadEvent)) and e.audio_time_s <= pause_end_s]
    assert early == [], early  # nothing at all was recognized while paused
    levels = [e for e in rec.of(LevelEvent) if e.audio_time_s <= pause_end_s]
    assert levels and all(e.rms_dbfs == e.peak_dbfs == -120.0 for e in levels)  # the meter heard silence too
    finals = rec.of(FinalEvent)
    assert [e.text for e in finals] == expected_after
    assert finals[0].start_s >= pause_end_s - 0.01
    assert any(e.rms_dbfs > -40 for e in rec.of(LevelEvent) if e.audio_time_s > pause_end_s)


class FailingSink:
    def __init__(self, fail_on: type) -> None:
        self.fail_on = fail_on
        self.calls = 0

    def __call__(self, event: Event) -> None:
        self.calls += 1
        if isinstance(event, self.fail_on):
            raise SinkError("the output went away", "test")


def test_a_failing_output_is_removed_and_the_others_get_every_event():
    audio = utterances(11, 2)
    before, after = Recorder(), Recorder()
    bad = FailingSink(VadEvent)  # fails on the first VAD event, well before the end of the stream
    ring = RingBuffer(len(audio))
    ring.write(audio)
    ring.close()
    worker = Worker(energy_recognizer(), ring, [before, bad, after])
    run_worker(worker)

    assert len(worker.sink_errors) == 1 and isinstance(worker.sink_errors[0], SinkError)
    assert bad not in worker.handlers and before in worker.handlers and after in worker.handlers
    failed_at = bad.calls  # it got events up to the one it failed on, then no more
    assert isinstance(before.events[failed_at - 1], VadEvent)
    assert before.events == after.events  # the handler after the failing one missed nothing, not even that one
    assert len(before.events) > failed_at
    assert [e.text for e in before.of(FinalEvent)] == direct_finals(audio)


def test_an_unexpected_handler_error_stops_the_worker_and_is_kept():
    ring = RingBuffer(SR * 4)
    ring.write(utterances(2, 1))
    ring.close()

    def broken(event: Event) -> None:
        if isinstance(event, FinalEvent):
            raise KeyError("bug")

    worker = Worker(energy_recognizer(), ring, [broken])
    worker.start()
    assert worker.finished.wait(DEADLINE_S)
    assert isinstance(worker.error, KeyError) and worker.sink_errors == []


def test_stats_get_lag_drops_and_overflows_filled_in():
    ring = RingBuffer(SR)
    rec = Recorder()
    worker = Worker(energy_recognizer(), ring, [rec], source_dropped=lambda: 7, input_overflows=lambda: 3)
    ring.write(np.zeros(SR + SR // 2, np.float32))  # half a second more than the ring holds: dropped
    assert ring.dropped_samples == SR // 2
    ring.read(SR // 4)  # leaves three quarters of a second unread
    worker.publish([StatsEvent(1.0, 2.0, rtf=0.1, step_compute_ms=5.0, lag_s=0.0, dropped_samples=0)])
    (stats,) = rec.of(StatsEvent)
    (notice,) = rec.of(NoticeEvent)  # the drops are told as they happen, not only at exit
    assert notice.kind == "dropped" and "0.5 s of audio dropped" in notice.message
    assert stats.lag_s == pytest.approx(0.75)
    assert stats.dropped_samples == SR // 2 + 7 and stats.input_overflows == 3
    assert (stats.rtf, stats.step_compute_ms, stats.audio_time_s) == (0.1, 5.0, 1.0)  # the rest is kept
    assert worker.dropped_samples() == SR // 2 + 7

    # and the stats the running worker publishes are completed the same way
    ring.close()
    run_worker(worker)
    published = rec.of(StatsEvent)[1:]
    assert published and all(e.dropped_samples == SR // 2 + 7 and e.input_overflows == 3 for e in published)
    assert published[-1].lag_s == 0.0


def test_level_events_follow_the_worker_clock():
    """The meter publishes at most once per METER_INTERVAL_S of the worker's clock: with a clock that stands
    still, one level event however the audio arrives; with one that moves on a second per call, one per
    block read."""
    for clock, expect_one in ((lambda: 100.0, True), (itertools.count().__next__, False)):
        ring = RingBuffer(SR * 4)
        rec = Recorder()
        worker = Worker(energy_recognizer(), ring, [rec], clock=clock)
        worker.start()
        for i in range(0, 3 * SR, 800):
            ring.write(speech_like(i, 0.05), block=True)
        ring.close()
        assert worker.finished.wait(DEADLINE_S) and worker.error is None
        levels = rec.of(LevelEvent)
        if expect_one:
            assert len(levels) == 1
        else:  # one per block read, the last one for the end of the stream
            assert levels[-1].audio_time_s == pytest.approx(3.0)
            assert [e.audio_time_s for e in levels] == sorted({e.audio_time_s for e in levels})


def test_in_silence_the_worker_reads_idle_sized_chunks_and_every_block_in_speech():
    """Fewer wake-ups in silence (idle CPU): while no utterance is open the worker waits for IDLE_READ_MS of
    audio, in speech it takes every capture block as it comes (no latency added); the finals are the same."""
    from streamer.audio.replay import BlockReplay, paced_blocks
    from streamer.core.config import IDLE_READ_MS

    block = SR // 50  # 20 ms, as a microphone delivers it
    audio = np.concatenate([np.zeros(SR // 2, np.float32), speech_like(3, 1.0), np.zeros(SR, np.float32)])
    expected = direct_finals(audio)
    assert len(expected) == 1 and expected[0]
    ring = RingBuffer(len(audio))
    recognizer = energy_recognizer()
    fed: list[tuple[bool, int]] = []  # (idle before the chunk, its length)
    feed = recognizer.feed
    recognizer.feed = lambda chunk: (fed.append((recognizer.idle, len(chunk.samples))), feed(chunk))[1]
    rec = Recorder()
    worker = Worker(recognizer, ring, [rec])
    source = BlockReplay(paced_blocks(audio, block), ring, "realtime", threading.Event())
    worker.start()
    source.start()
    assert worker.finished.wait(DEADLINE_S) and worker.error is None
    assert [e.text for e in rec.of(FinalEvent)] == expected
    idle = [n for was_idle, n in fed[:-1] if was_idle]  # (the last chunk: whatever was left at the close)
    busy = [n for was_idle, n in fed if not was_idle]
    assert idle and busy
    assert min(idle) >= IDLE_READ_MS * SR // 1000 - block, idle  # a read lands between two blocks at most
    assert np.median(busy) == block, busy
