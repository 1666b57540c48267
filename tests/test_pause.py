"""Pausing at an exact sample: Recognizer.end_utterance (the final without the VAD's hangover) and the
worker's pause / resume switches (Session.pause, `streamer ctl pause`, push-to-talk). Hand-built model and
energy VAD: no devices, no torch."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.app.worker import Worker
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.core.events import AudioChunk, FinalEvent, PartialEvent, VadEvent

from helpers import Recorder, direct_finals, energy_recognizer, speech_like, utterances, wait_for

SR = MODEL_SAMPLE_RATE
DEADLINE_S = 20.0


def test_end_utterance_gives_the_final_now_and_the_stream_goes_on():
    lead, speech = np.zeros(SR // 2, np.float32), speech_like(4, 1.5)
    rec = energy_recognizer()
    events = rec.feed(AudioChunk(0, np.concatenate([lead, speech]), SR))
    assert not [e for e in events if isinstance(e, FinalEvent)]  # still speaking: no final yet
    ended = rec.end_utterance()
    finals = [e for e in ended if isinstance(e, FinalEvent)]
    assert len(finals) == 1 and finals[0].text
    # the same text as an utterance that ended in silence: the pass saw the same audio
    assert finals[0].text == direct_finals(np.concatenate([lead, speech]))[0]
    assert finals[0].end_s == pytest.approx((len(lead) + len(speech)) / SR, abs=0.01)
    assert [e.speech for e in ended if isinstance(e, VadEvent)] == [False]
    assert rec.end_utterance() == []  # nothing open any more
    # the next speech opens a new utterance
    more = rec.feed(AudioChunk(len(lead) + len(speech), utterances(9, 1), SR)) + rec.finish()
    assert len([e for e in more if isinstance(e, FinalEvent)]) == 1


def test_a_pause_mid_utterance_finalises_it_without_more_audio():
    """Push-to-talk: the key is released while speech goes on; the final comes at once, not after the
    hangover (no further audio is written at all)."""
    audio = np.concatenate([np.zeros(SR // 2, np.float32), speech_like(2, 1.5)])
    ring = RingBuffer(SR * 30)
    rec = Recorder()
    recognizer = energy_recognizer()
    worker = Worker(recognizer, ring, [rec])
    worker.start()
    try:
        ring.write(audio)
        wait_for(lambda: recognizer.audio_end_sample >= len(audio), "the speech to be fed")
        assert not rec.of(FinalEvent)
        worker.pause_at(ring.write_pos)
        wait_for(lambda: rec.of(FinalEvent), "the final after the pause", timeout=5)
        final = rec.of(FinalEvent)[0]
        assert final.text and final.end_s == pytest.approx(len(audio) / SR, abs=0.01)
        assert recognizer.audio_end_sample == len(audio)  # no audio after the pause was needed
    finally:
        ring.close()
        assert worker.finished.wait(DEADLINE_S) and worker.error is None


def test_switches_take_effect_at_their_sample_inside_a_chunk():
    """Audio before the pause point is heard (even though the worker reads it after the pause was asked
    for), audio between pause and resume is silence, audio after the resume is heard again."""
    first = np.concatenate([np.zeros(SR // 2, np.float32), speech_like(3, 1.2)])
    muted = utterances(5, 2)  # two utterances that would be finals if heard
    last = utterances(7, 1)
    ring = RingBuffer(SR * 60)
    rec = Recorder()
    recognizer = energy_recognizer()
    worker = Worker(recognizer, ring, [rec])
    ring.write(first)
    worker.pause_at(ring.write_pos)
    ring.write(muted)
    worker.resume_at(ring.write_pos)
    ring.write(last)
    ring.close()
    worker.start()  # reads everything in one chunk: the switches cut it
    assert worker.finished.wait(DEADLINE_S) and worker.error is None

    finals = rec.of(FinalEvent)
    expected_first = direct_finals(first)  # ended where the pause cut it
    assert [f.text for f in finals] == [*expected_first, *direct_finals(last)]
    assert finals[0].end_s == pytest.approx(len(first) / SR, abs=0.01)
    muted_from, muted_to = len(first) / SR, (len(first) + len(muted)) / SR
    heard = [e for e in rec.events if isinstance(e, (PartialEvent, FinalEvent, VadEvent))
             and muted_from + 0.05 < e.audio_time_s <= muted_to]
    assert heard == []
    assert finals[1].start_s >= muted_to - 0.01
