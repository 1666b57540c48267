"""The real CLI on the bundled multi-utterance demo session: fast replay gives the events of real time (each
with its own audio time, partials for every utterance, the same finals), and --debug shows the stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop_fixtures import demo_model_or_skip, run_streamer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SESSION = ROOT / "assets" / "demo_clips" / "demo_session.wav"  # 25 s, several utterances
SHORT = ROOT / "assets" / "demo_clips" / "demo1_en-us.wav"


def replay(tmp_path: Path, mode: str) -> list[dict]:
    out = tmp_path / f"{mode}.jsonl"
    result = run_streamer(["--file", str(SESSION), "--model", "demo", "--no-tui", "--replay", mode,
                           "--output", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_fast_replay_events_carry_their_own_audio_time_and_match_real_time(tmp_path):
    """Before: every event of fast replay carried the end-of-file audio time (the worker read the whole ring
    at once) and no partials came after the first utterance."""
    demo_model_or_skip()
    fast = replay(tmp_path, "fast")
    finals = [e for e in fast if e["type"] == "final"]
    partials = [e for e in fast if e["type"] == "partial"]
    assert len(finals) >= 3
    assert {e["segment_id"] for e in finals} <= {e["segment_id"] for e in partials}  # partials for every one
    times = [e["audio_time_s"] for e in fast if e["type"] in ("partial", "final", "vad")]
    assert times == sorted(times)  # in the order the audio was heard
    assert len({round(t) for t in times}) > 10  # spread over the file, not all at its end
    for f in finals:  # each final right after its utterance ended, not at the end of the file
        assert f["end_s"] < f["audio_time_s"] < f["end_s"] + 1.5
    real = replay(tmp_path, "realtime")
    assert [e["text"] for e in real if e["type"] == "final"] == [e["text"] for e in finals]


def test_debug_shows_vad_windows_and_the_final_pass(tmp_path):
    demo_model_or_skip()
    result = run_streamer(["--file", str(SHORT), "--model", "demo", "--no-tui", "--debug"], tmp_path)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "streamer.core.recognizer: vad: speech start at sample" in err
    assert "vad: speech end at sample" in err
    assert "window: segment 0 samples [" in err
    assert "final pass: segment 0" in err and "final: segment 0" in err
    assert result.stdout.strip()  # the transcript still comes
