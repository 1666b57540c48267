"""`streamer bench --peers`: the metrics on hand-built event timelines (fast), the report of a peer that cannot
run, and one real peer driver end to end when .venv-peers exists (slow; skipped with the reason otherwise:
the peers are benchmark material, CI does not install them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.bench import peers
from streamer.bench.peers import PeerEvent, Utterance, utterance_metrics


def utt(i: int, start: float, end: float, ref: str, source: str = "real") -> Utterance:
    # speech from 0.2 s after the clip starts to 0.2 s before it ends
    return Utterance(i, f"u{i}", source, ref, start, end, start + 0.2, end - 0.2)


def test_latencies_and_accuracy_on_a_hand_built_timeline():
    us = [utt(0, 1.0, 3.0, "HELLO THERE WORLD"), utt(1, 4.0, 6.0, "GOOD MORNING", "synthetic")]
    # utterance 0: speech 1.2 .. 2.8 s
    ev = [
        PeerEvent("partial", 0.5, "", 0.4),                        # empty: shows nothing
        PeerEvent("partial", 1.5, "hello", 1.4),                    # first update: 300 ms after speech start
        PeerEvent("partial", 2.5, "hello there", 2.3),
        PeerEvent("partial", 3.0, "hello there world", 2.9),
        PeerEvent("final", 3.3, "Hello there, world.", 2.8, 1.2),  # final 500 ms after end of speech
        # utterance 1 (speech 4.2 .. 5.8 s): only a final, at 6.8 s, that covers it all
        PeerEvent("final", 6.8, "good morning", 5.8, 4.2),
    ]
    m = utterance_metrics(ev, us, step_s=0.1)
    first = [r["first_partial_ms"] for r in m["per_utterance"]]
    assert first == [pytest.approx(300.0), pytest.approx(2600.0)]
    assert [r["final_ms"] for r in m["per_utterance"]] == [pytest.approx(500.0), pytest.approx(1000.0)]
    # utterance 0, steps ending 1.3 .. 2.8: 1.3, 1.4 by the 1.5 s update (200, 100 ms); 1.5 .. 2.3 by the 2.5 s
    # one (1000 .. 200 ms); 2.4 .. 2.8 by the 3.0 s one (600 .. 200 ms)
    u0 = [200, 100] + [round((2.5 - t) * 1000) for t in np.arange(1.5, 2.35, 0.1)] + \
         [round((3.0 - t) * 1000) for t in np.arange(2.4, 2.85, 0.1)]
    # utterance 1, steps ending 4.3 .. 5.8: all by the final at 6.8 s
    u1 = [round((6.8 - t) * 1000) for t in np.arange(4.3, 5.85, 0.1)]
    assert m["partial_p50_ms"] == pytest.approx(float(np.percentile(u0 + u1, 50)), abs=1.0)
    assert m["uncovered_steps"] == 0 and m["missing_final"] == 0 and m["missing_first_partial"] == 0
    assert m["wer_real"] == 0.0 and m["cer_real"] == 0.0  # punctuation and case do not count
    assert m["wer_synthetic"] == 0.0


def test_finals_go_to_the_clip_that_holds_their_audio_and_flushed_ones_have_no_latency():
    us = [utt(0, 1.0, 3.0, "ONE TWO"), utt(1, 4.5, 6.5, "THREE FOUR")]
    ev = [
        PeerEvent("final", 3.6, "one", 1.4, 1.2),
        PeerEvent("final", 5.0, "two", 4.9, 2.2),        # late, and Whisper stretched its end into the next
                                                          # clip: it starts in utterance 0, so it is its
        PeerEvent("final", 9.0, "three four", 6.0, 4.8, flushed=True),
    ]
    m = utterance_metrics(ev, us)
    assert [r["text"] for r in m["per_utterance"]] == ["one two", "three four"]
    assert m["per_utterance"][0]["final_ms"] == pytest.approx(2200.0)  # the last of its finals
    assert m["per_utterance"][1]["final_ms"] is None
    assert m["missing_final"] == 1 and m["flushed_final"] == 1
    assert m["wer_real"] == 0.0


def test_a_repeat_of_the_previous_text_is_not_a_first_partial_and_wrong_words_count():
    us = [utt(0, 1.0, 3.0, "A B"), utt(1, 4.0, 6.0, "C D")]
    ev = [
        PeerEvent("partial", 2.0, "a b", 2.0),
        PeerEvent("partial", 4.5, "a b", 4.5),          # the old line again, after utterance 1 started
        PeerEvent("partial", 5.0, "c", 5.0),
        PeerEvent("final", 3.0, "a b", 2.8, 1.2),
        PeerEvent("final", 6.5, "c x", 5.8, 4.2),
    ]
    m = utterance_metrics(ev, us)
    assert m["per_utterance"][1]["first_partial_ms"] == pytest.approx(800.0)
    assert m["wer_real"] == pytest.approx(0.25)  # 1 substitution in 4 words
    assert m["missing_final"] == 0


def test_speech_never_reached_is_counted_not_guessed():
    us = [utt(0, 1.0, 3.0, "A")]
    m = utterance_metrics([PeerEvent("partial", 1.5, "a", 1.5)], us, step_s=0.1)
    assert m["uncovered_steps"] == 13  # 1.6 .. 2.8
    assert m["missing_final"] == 1 and m["final_p50_ms"] is None


def test_normalize_reads_whisper_text_like_the_references():
    assert peers.normalize("Mr. Quilter, the well-known apostle!") == "mr quilter the well known apostle"
    assert peers.normalize("I'm HERE") == "i'm here"


def test_a_peer_without_its_venv_is_reported_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(peers, "peer_python", lambda root=None: tmp_path / "missing" / "python")
    run = peers.run_system("local_agreement", np.zeros(1600, np.float32), workdir=tmp_path)
    assert run.error is not None and ".venv-peers is missing" in run.error and "setup.sh" in run.error
    row = peers.summary_row(run, [], 1.0)
    assert "could not run" in peers.render({"systems": [row]})


def test_unknown_systems_are_refused():
    from streamer.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown system"):
        peers.systems_to_run("streamer,vosk")


PEER_PY = peers.peer_python()


@pytest.mark.slow
@pytest.mark.skipif(not PEER_PY.exists(), reason=f"{PEER_PY} not found: the Whisper peers are benchmark material, "
                    "installed by bash benchmarks/peers/setup.sh, not in CI")
def test_local_agreement_driver_streams_a_clip_in_real_time(tmp_path: Path):
    clip = peers.demo_clips()[0]
    session = peers.build_session([clip], gap_s=1.0)
    run = peers.run_system("local_agreement", session.audio, workdir=tmp_path)
    assert run.error is None, run.error
    m = utterance_metrics(run.events, peers.utterances_of(session))
    assert m["missing_final"] == 0 and m["first_partial_p50_ms"] is not None
    assert m["wer_synthetic"] is not None and m["wer_synthetic"] <= 0.2, m["per_utterance"]
    assert run.cpu_s is not None and run.cpu_s > 0 and run.peak_rss_mb and run.peak_rss_mb > 50


def test_the_target_compares_like_with_like():
    rows = [{"system": "streamer", "first_partial_p50_ms": 200.0, "partial_p50_ms": 100.0},
            {"system": "whisperlive", "first_partial_p50_ms": 500.0, "partial_p50_ms": 400.0},
            {"system": "realtimestt", "error": "could not run"}]
    t = {x["target"]: (x["value"], x["met"]) for x in peers.targets(rows)}
    assert t == {"whisperlive first_partial_p50_ms / streamer's >= 3": (2.5, False),
                 "whisperlive partial_p50_ms / streamer's >= 3": (4.0, True)}


def test_two_clips_heard_as_one_segment_cost_nothing_when_the_words_are_right():
    us = [utt(0, 1.0, 3.0, "ONE TWO THREE"), utt(1, 4.5, 6.5, "GO FORWARD")]
    m = utterance_metrics([PeerEvent("final", 7.0, "One, two, three. Go forward.", 6.0, 1.2)], us)
    assert [r["text"] for r in m["per_utterance"]] == ["One, two, three. Go forward.", ""]
    assert m["wer_real"] == 0.0 and m["missing_final"] == 1
