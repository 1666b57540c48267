"""The Session (streamer.app.session) over a BlockReplay source of synthetic audio and a hand-built model:
its lifecycle (start, wait, stop, `with`), its ordered shutdown on every path, and what it reports after.

The recognizer's VAD is replaced by an energy threshold (helpers.energy_speech) before the session starts,
so the synthetic "speech" segments as the test means it to, with no webrtcvad or Silero opinion involved."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from streamer.app.session import Session, SessionOptions
from streamer.audio.replay import BlockReplay, paced_blocks
from streamer.core.config import MODEL_SAMPLE_RATE, BufferConfig, Config, VadConfig
from streamer.core.events import Event, FinalEvent, PartialEvent
from streamer.core.vad import VadSegmenter
from streamer.errors import AudioDeviceError, SinkError

from helpers import LocalModel, direct_finals, energy_speech, speech_like, utterances, wait_for

SR = MODEL_SAMPLE_RATE
DEADLINE_S = 20.0
BLOCK = 1600  # 100 ms, like a capture block


class RecordingSink:
    def __init__(self, fail_on: type | None = None) -> None:
        self.events: list[Event] = []
        self.closed = 0
        self.fail_on = fail_on

    def handle(self, event: Event) -> None:
        if self.fail_on is not None and isinstance(event, self.fail_on):
            raise SinkError("cannot write the transcript", "test")
        self.events.append(event)

    def close(self) -> None:
        self.closed += 1

    def finals(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, FinalEvent)]


def replay(blocks, mode="fast", clock=time.time):
    return lambda ring, stop: BlockReplay(blocks, ring, mode, stop, clock=clock)


def make_session(model, source, sinks=(), config: Config | None = None, **kwargs) -> Session:
    config = config or Config(vad=VadConfig(confirm="off"))
    session = Session(model, source, SessionOptions(config), sinks=sinks, **kwargs)
    session.recognizer.vad = VadSegmenter(config.vad, classifier=energy_speech)
    return session


def test_with_runs_to_the_end_and_closes_each_sink_once():
    audio = utterances(21, 3)
    expected = direct_finals(audio)
    assert len(expected) == 3 and all(expected)
    sinks = [RecordingSink(), RecordingSink()]
    with make_session(LocalModel(), replay(paced_blocks(audio, BLOCK)), sinks) as session:
        assert session.wait(DEADLINE_S), "the stream did not end"
        assert [s.closed for s in sinks] == [0, 0]  # closed by the shutdown, not before
    assert [s.closed for s in sinks] == [1, 1]
    session.raise_errors()
    assert session.warnings() == []
    assert session.processed_s == pytest.approx(len(audio) / SR)
    assert sinks[0].finals() == sinks[1].finals() == expected
    assert sinks[0].events == sinks[1].events
    session.stop()  # again: nothing happens
    assert [s.closed for s in sinks] == [1, 1]


def endless_speech(pulled: list[int]):
    """Speech-like blocks for ever (a microphone that never pauses); counts the blocks taken."""
    for i in itertools.count():
        pulled.append(i)
        yield speech_like(i, BLOCK / SR)


def test_stop_is_idempotent_and_finalises_the_utterance_in_progress():
    pulled: list[int] = []
    sink = RecordingSink()
    session = make_session(LocalModel(), replay(endless_speech(pulled), "realtime"), [sink])
    session.start()
    assert session.start() is session  # a second start does nothing
    wait_for(lambda: any(isinstance(e, PartialEvent) and e.committed_text for e in list(sink.events)),
             "committed text of the endless utterance")
    assert not any(isinstance(e, FinalEvent) and not e.forced for e in sink.events)  # it never pauses

    stopper = threading.Thread(target=session.stop)  # a second stop from another thread meanwhile
    stopper.start()
    session.stop()
    stopper.join(DEADLINE_S)
    assert not stopper.is_alive()
    session.stop()
    assert sink.closed == 1
    assert session.finished.is_set() and session.worker.join(0)
    session.raise_errors()
    finals = [e for e in sink.events if isinstance(e, FinalEvent) and not e.forced]
    assert len(finals) == 1 and finals[0].text  # the utterance in progress was finalised at the stop
    assert finals[0].end_s == pytest.approx(session.processed_s, abs=0.05)
    assert session.processed_s == pytest.approx(len(pulled) * BLOCK / SR, abs=BLOCK / SR + 1e-9)
    assert sink.events[-1].audio_time_s == pytest.approx(session.processed_s)  # finish()'s stats came last


class FailingSource:
    """A device that cannot be opened."""

    mode = "live"
    total_samples = None

    def __init__(self, ring, stop) -> None:
        self.ring = ring
        self.error = None
        self.closed = 0

    def start(self) -> None:
        raise AudioDeviceError("input device busy", "close the other program")

    def close(self) -> None:
        self.closed += 1
        self.ring.close()

    def dropped_samples(self) -> int:
        return 0

    def input_overflows(self) -> int:
        return 0

    def nonfinite_samples(self) -> int:
        return 0


def test_a_source_that_cannot_start_leaves_the_session_stopped_and_raises():
    sink = RecordingSink()
    session = make_session(LocalModel(), FailingSource, [sink])
    with pytest.raises(AudioDeviceError, match="input device busy"):
        with session:
            raise AssertionError("the body must not run")
    assert session.source.closed == 1 and session.ring.closed
    assert session.finished.is_set() and session.worker.join(0)  # the worker ended and was joined
    assert sink.closed == 1
    assert session.worker.error is None
    session.stop()
    assert sink.closed == 1 and session.source.closed == 1


def test_two_sessions_share_one_model():
    model = LocalModel()
    audio_a, audio_b = utterances(31, 2), utterances(41, 1)
    sinks = [RecordingSink(), RecordingSink()]
    sessions = [make_session(model, replay(paced_blocks(a, BLOCK)), [s]) for a, s in zip((audio_a, audio_b), sinks)]
    for s in sessions:  # one after the other on the same model object
        with s:
            assert s.wait(DEADLINE_S)
    assert sinks[0].finals() == direct_finals(audio_a) and len(sinks[0].finals()) == 2
    assert sinks[1].finals() == direct_finals(audio_b) and len(sinks[1].finals()) == 1

    # and both at once (the hand-built model keeps no state between calls)
    again = [RecordingSink(), RecordingSink()]
    sessions = [make_session(model, replay(paced_blocks(a, BLOCK)), [s]) for a, s in zip((audio_a, audio_b), again)]
    for s in sessions:
        s.start()
    for s in sessions:
        assert s.wait(DEADLINE_S)
        s.stop()
        s.raise_errors()
    assert [s.finals() for s in again] == [s.finals() for s in sinks]


class ResettableModel(LocalModel):
    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


def test_each_session_resets_a_model_that_keeps_state():
    model = ResettableModel()
    for seed in (1, 2):
        with make_session(model, replay(paced_blocks(utterances(seed, 1), BLOCK))) as s:
            assert s.wait(DEADLINE_S)
        assert model.resets == seed


class BrokenModel(LocalModel):
    def logits(self, audio, start_sample=None):
        raise RuntimeError("the model broke")


def test_raise_errors_re_raises_the_workers_error_after_a_clean_shutdown():
    sink = RecordingSink()
    audio = utterances(5, 1)
    with make_session(BrokenModel(), replay(paced_blocks(audio, BLOCK)), [sink]) as session:
        assert session.wait(DEADLINE_S)
    assert sink.closed == 1
    with pytest.raises(RuntimeError, match="the model broke"):
        session.raise_errors()


def test_raise_errors_reports_a_failed_output_and_the_others_kept_the_transcript():
    audio = utterances(6, 2)
    bad, good = RecordingSink(fail_on=FinalEvent), RecordingSink()
    with make_session(LocalModel(), replay(paced_blocks(audio, BLOCK)), [bad, good]) as session:
        assert session.wait(DEADLINE_S)
    assert good.finals() == direct_finals(audio)
    assert bad.finals() == [] and bad.closed == good.closed == 1  # a failed sink is still closed
    with pytest.raises(SinkError, match="cannot write the transcript"):
        session.raise_errors()


def test_warnings_report_the_samples_dropped():
    """A realtime replay that delivers one block longer than the ring (its clock says the block is long due)
    overruns the ring at once: the excess is dropped, counted, and named in warnings()."""
    config = Config(vad=VadConfig(confirm="off"), buffer=BufferConfig(ring_capacity_s=5.0))
    capacity = 5 * SR
    audio = np.concatenate([speech_like(3, 1.0), np.zeros(6 * SR, np.float32)])  # 7 s in one block
    late_clock = itertools.count(0, 1000.0).__next__  # every block is already due: no waiting
    with make_session(LocalModel(), replay([audio], "realtime", late_clock), config=config) as session:
        assert session.wait(DEADLINE_S)
    session.raise_errors()
    dropped = len(audio) - capacity
    assert session.dropped_samples() == dropped
    (line,) = session.warnings()
    assert f"{dropped} samples (2.00 s)" in line and "dropped" in line
    assert session.processed_s == pytest.approx(len(audio) / SR)  # the time axis goes on past the gap
