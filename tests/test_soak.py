"""The reliability soak (`streamer bench --soak`, streamer/bench/soak.py): the mix it builds, how it reads a
growing jsonl file, and the 2-minute accelerated soak with every fault (a stall, overload, a full-disk output,
closed stdout, non-finite samples) through the real `streamer` process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.bench import soak

RATE = soak.MODEL_SAMPLE_RATE


def test_mix_layout_and_nonfinite_samples_are_where_it_says():
    mix = soak.build_mix(2, seed=3)
    assert abs(mix.duration_s - 120) < 0.01
    items = mix.items
    assert sum(i.speech for i in items) >= 15 and any(not i.speech for i in items)
    for a, b in zip(items, items[1:]):
        gap = (b.start - a.end) / RATE
        assert soak.GAP_RANGE_S[0] - 1e-3 <= gap <= soak.GAP_RANGE_S[1] + 1e-3
    assert items[-1].end <= len(mix.audio) - soak.TAIL_FAST_S * RATE
    bad = np.flatnonzero(~np.isfinite(mix.audio))
    assert sorted(bad.tolist()) == sorted(mix.nonfinite_at) and len(bad) > 50
    # the single samples sit inside speech clips, the run of 50 in room tone between items
    singles = [at for at in mix.nonfinite_at if not np.isnan(mix.audio[at - 1]) and not np.isnan(mix.audio[at + 1])]
    assert singles and all(any(i.speech and i.start <= at < i.end for i in items) for at in singles)
    assert soak.build_mix(2, seed=3).items == items  # seeded
    assert np.isfinite(soak.build_mix(2, seed=3, nonfinite=False).audio).all()


def test_item_at_extends_items_half_way_into_the_gaps():
    mix = soak.build_mix(1, seed=0)
    a, b = mix.items[0], mix.items[1]
    assert mix.item_at((a.start + a.end) / 2 / RATE) is a
    assert mix.item_at((a.end + 10) / RATE) is a
    assert mix.item_at((b.start - 10) / RATE) is b


def test_jsonl_tail_reads_complete_lines_only(tmp_path):
    path = tmp_path / "x.jsonl"
    tail = soak.JsonlTail(path)
    assert tail.poll() == []  # not there yet
    final = {"type": "final", "text": "A", "start_s": 1.0, "end_s": 2.5, "wall_time_s": 5.0}
    line = json.dumps(final)
    path.write_text(json.dumps({"type": "stats", "processed_s": 1.5}) + "\n" + line[:10])
    assert [e["type"] for e in tail.poll()] == ["stats"] and tail.front_s == 1.5
    with open(path, "a") as f:
        f.write(line[10:] + "\n")
    assert tail.poll() == [final] and tail.finals == 1 and tail.front_s == 2.5


def test_device_lost_lines_are_told_from_the_stall_and_full_disk_lines():
    assert soak._device_lost("streamer: error: lost input device [1] default (check the microphone)")
    assert soak._device_lost("streamer: warning: input device changed from [1] vmic to [0] default")
    assert not soak._device_lost("streamer: warning: streamer was stalled for 14.0 s (stopped, suspended or "
                                 "starved of CPU): nothing missing at the input; listening again")
    assert not soak._device_lost("streamer: error: cannot write to full.srt: No space left on device (free disk "
                                 "space or choose another --output path)")


@pytest.fixture(scope="module")
def soak_2min(tmp_path_factory):
    from desktop_fixtures import demo_model_or_skip

    demo_model_or_skip()
    if not soak.Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    doc = soak.run_soak(2, live=False, model="demo", folder=tmp_path_factory.mktemp("soak"), progress=False)
    print("\n" + soak.render(doc))
    return doc


@pytest.mark.slow
def test_two_minute_accelerated_soak_with_every_fault(soak_2min):
    r = soak_2min["result"]
    faults = {f["fault"] for f in r["faults"]}
    assert {"stdout closed", "stall (SIGSTOP)", "overload"} <= faults, r["faults"]
    # every utterance of the mix gives its final in ok.jsonl, the same as a run without faults, and ok.txt
    assert r["finals_received"] == r["finals_expected"], r["missing"]
    assert r["finals_equal_reference"] == r["finals_expected"]
    assert r["lines_in_txt"] == r["finals_in_jsonl"] and r["txt_equals_jsonl"]
    assert r["tracebacks"] == 0, r["stderr"]
    full = [line for line in r["stderr"] if "full.srt" in line]
    assert len(full) == 1 and full[0].startswith("streamer: error: cannot write to ") and \
        "No space left on device" in full[0], r["stderr"]
    closed = [line for line in r["stderr"] if "standard output" in line]
    assert len(closed) == 1 and closed[0].startswith("streamer: warning: standard output closed"), r["stderr"]
    assert r["stdout_lines_read"] == soak.STDOUT_LINES
    assert r["exit_code"] == 2  # the full disk is an error (the other outputs are complete)
    assert r["zeroed_samples"] == r["injected_nonfinite"] > 0
    assert r["dropped_samples"] == 0
    rss = r["rss_mb"]
    assert rss["end"] <= rss["start"] * 1.5 + 50, rss


@pytest.mark.slow
def test_soak_every_fault_has_its_line(soak_2min):
    r = soak_2min["result"]
    assert len([line for line in r["stderr"] if "non-finite" in line]) == 1, r["stderr"]
