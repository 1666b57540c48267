"""Every event carries its own audio time, whatever the chunk size; an utterance without text gives no final;
partials merged while catching up are counted; --debug logs the stages. The core alone: hand-built model,
energy VAD, no threads."""

from __future__ import annotations

import logging

import numpy as np

from streamer.core.config import Config, VadConfig
from streamer.core.events import AudioChunk, FinalEvent, PartialEvent, StatsEvent, VadEvent
from streamer.core.recognizer import Recognizer
from streamer.core.vad import VadSegmenter

from helpers import SR, LocalModel, energy_recognizer, energy_speech, utterances


def feed_in(rec, audio: np.ndarray, chunk: int) -> list:
    events = []
    for i in range(0, len(audio), chunk):
        events += rec.feed(AudioChunk(i, audio[i : i + chunk], SR))
    return events + rec.finish()


def summary(events) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, PartialEvent):
            out.append(("partial", e.segment_id, e.audio_time_s, e.committed_text, e.tentative_text))
        elif isinstance(e, FinalEvent):
            out.append(("final", e.segment_id, e.audio_time_s, e.text))
        elif isinstance(e, VadEvent):
            out.append(("vad", e.segment_id, e.audio_time_s, e.speech))
    return out


def test_a_whole_recording_fed_at_once_gives_the_events_of_real_time_feeding():
    """Before: every event of a chunk carried the chunk's end time, and an utterance that started and ended
    inside one chunk had no partials at all (fast replay reads up to 30 s at once)."""
    audio = utterances(3, 4, speech_s=1.5)
    at_once = summary(feed_in(energy_recognizer(), audio, len(audio)))
    captured = summary(feed_in(energy_recognizer(), audio, 480))  # the VAD's 30 ms frames, as if captured
    assert at_once == captured
    segments = {e[1] for e in at_once if e[0] == "final"}
    assert len(segments) == 4
    assert {e[1] for e in at_once if e[0] == "partial"} == segments  # partials for every utterance
    times = [e[2] for e in at_once]
    assert times == sorted(times)
    assert times[0] < 2.0 and times[-1] > len(audio) / SR - 1.5  # spread over the recording, not its end


def test_event_audio_time_is_when_it_was_decided():
    audio = utterances(5, 2, speech_s=1.2, pause_s=1.0)
    events = feed_in(energy_recognizer(), audio, len(audio))
    starts = [e for e in events if isinstance(e, VadEvent) and e.speech]
    ends = [e for e in events if isinstance(e, VadEvent) and not e.speech]
    # speech begins at 1.0 s and 3.2 s; ends at 2.2 s and 4.4 s (decided a hangover later)
    assert [round(e.audio_time_s, 1) for e in starts] == [1.1, 3.3]
    assert all(2.2 < e.audio_time_s < 3.0 for e in ends[:1]) and all(4.4 < e.audio_time_s < 5.2 for e in ends[1:])
    for p in (e for e in events if isinstance(e, PartialEvent)):
        assert p.audio_time_s >= p.tentative_until_s  # never before the audio it shows


class SilentModel(LocalModel):
    """Every frame blank: an utterance with no text."""

    def logits(self, audio, start_sample=None):
        out = super().logits(audio, start_sample)
        out[:] = 0.0
        out[:, 0] = 1.0
        return out


def test_an_utterance_without_text_gives_no_final_but_its_vad_end():
    cfg = Config(vad=VadConfig(confirm="off"))
    rec = Recognizer(SilentModel(), cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech))
    events = feed_in(rec, utterances(1, 2), 1600)
    assert [e for e in events if isinstance(e, FinalEvent)] == []
    assert [(e.segment_id, e.speech) for e in events if isinstance(e, VadEvent)] == [(0, True), (0, False),
                                                                                     (1, True), (1, False)]
    assert rec.empty_finals == 2


def test_catching_up_counts_the_partials_it_merges():
    audio = utterances(2, 2, speech_s=2.0)
    cfg = Config(vad=VadConfig(confirm="off"))

    def run(hops: int, chunk: int) -> tuple[Recognizer, list]:
        rec = Recognizer(LocalModel(), cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech),
                         max_hops_per_step=hops)
        return rec, feed_in(rec, audio, chunk)

    on_time, events = run(1, 480)  # never behind: every partial shown
    assert on_time.skipped_partials == 0
    behind, late_events = run(4, 16000)  # a second of audio per step: up to four hops per window
    assert behind.skipped_partials > 0
    stats = [e for e in late_events if isinstance(e, StatsEvent)]
    assert stats[-1].skipped_partials == behind.skipped_partials
    shown = len([e for e in events if isinstance(e, PartialEvent)])
    merged = len([e for e in late_events if isinstance(e, PartialEvent)])
    # every partial is either shown or counted (on time, a partial or two per utterance may also show the
    # audio heard while the VAD waited out the pause)
    assert shown - 2 * 2 <= merged + behind.skipped_partials <= shown
    finals = lambda evs: [e.text for e in evs if isinstance(e, FinalEvent)]  # noqa: E731
    assert finals(late_events) == finals(events)  # finals stay complete


def test_debug_log_names_vad_windows_and_the_final_pass(caplog):
    with caplog.at_level(logging.DEBUG, logger="streamer"):
        feed_in(energy_recognizer(), utterances(1, 1), 1600)
    text = caplog.text
    assert "vad: speech start at sample" in text and "vad: speech end at sample" in text
    assert "window: segment 0 samples [" in text and " ms" in text
    assert "final pass: segment 0" in text and "final: segment 0" in text


def test_no_debug_records_when_debug_is_off(caplog):
    with caplog.at_level(logging.INFO, logger="streamer"):
        feed_in(energy_recognizer(), utterances(1, 1), 1600)
    assert not [r for r in caplog.records if r.name.startswith("streamer.core")]
