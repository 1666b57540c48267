"""The benchmark harness: its measurements on hand-made events, and a smoke run of `streamer bench` with a
tiny model on a short clip (fields present and sane; no timing assertions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.bench.metrics import SegmentTruth, fidelity, instability, segment_timings
from streamer.core.events import FinalEvent, PartialEvent
from streamer.core.windowing import FrameGeometry

REPO = Path(__file__).resolve().parents[1]
G = FrameGeometry.from_conv((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), 16000)


def partial(t, committed_until, tentative_until, committed="", tentative="", seg=0):
    return PartialEvent(audio_time_s=t, wall_time_s=t, segment_id=seg, committed_text=committed,
                        tentative_text=tentative, committed_until_s=committed_until, tentative_until_s=tentative_until)


def final(t, text, seg=0, forced=False):
    return FinalEvent(audio_time_s=t, wall_time_s=t, segment_id=seg, text=text, words=(), start_s=0.0, end_s=1.0,
                      forced=forced)


def test_frame_latencies_follow_the_first_event_that_shows_or_commits_each_frame():
    seg = SegmentTruth(0, start_sample=0, end_sample=16000, detected_sample=24000, speech_end_sample=14000)
    frames = list(seg.frames(G))
    assert frames[0] == 0 and frames[-1] == 48  # (16000 - 400) // 320 + 1 frames
    events = [partial(0.5, 0.2, 0.4), partial(0.8, 0.4, 0.6), final(1.6, "A")]
    (t,) = segment_timings(events, [seg], G)
    shown = dict(zip(t.frames.tolist(), t.shown_s.tolist()))
    committed = dict(zip(t.frames.tolist(), t.committed_s.tolist()))
    assert shown[0] == shown[19] == 0.5 and shown[20] == shown[29] == 0.8 and shown[30] == shown[48] == 1.6
    assert committed[9] == 0.5 and committed[10] == 0.8 and committed[19] == 0.8 and committed[20] == 1.6
    assert t.final_s == 1.6 and t.text == "A"


def test_speech_mask_leaves_out_preroll_and_tail():
    seg = SegmentTruth(0, 0, 16000, 24000, speech_end_sample=12800, speech_start_sample=4800)
    frames = np.arange(0, 49)
    mask = seg.speech_mask(frames, G)
    centres = frames * 320 + 200
    assert mask.tolist() == ((centres >= 4800) & (centres < 12800)).tolist()


def test_instability_counts_tentative_words_that_changed():
    events = [
        partial(0.5, 0.2, 0.4, committed="HEL", tentative="LO WORD"),  # continues HELLO; WORD will become WORLD
        partial(0.8, 0.4, 0.6, committed="HELLO", tentative=" WORLD"),
        final(1.0, "HELLO WORLD"),
    ]
    assert instability(events) == (3, 1)


def test_instability_across_forced_pieces():
    events = [
        final(0.4, "ONE TWO", forced=True),
        partial(0.5, 0.2, 0.4, committed="THREE", tentative=" FOUR"),
        final(1.0, "THREE FIVE"),
    ]
    assert instability(events) == (1, 1)


def test_fidelity_sums_edits_over_reference_length():
    f = fidelity(["ABCD", "XY", ""], ["ABCE", "XY", ""])
    assert f["cer"] == pytest.approx(1 / 6, abs=1e-4) and f["identical_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert f["wer"] == pytest.approx(1 / 2)


@pytest.mark.slow
def test_bench_smoke_run_writes_sane_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), STREAMER_BENCH_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "streamer", "bench", "--model", "tiny", "--clips", "smoke", "--threads", "1",
           "--modes", "realtime,unaware,simulated", "--baselines", "all", "--idle-s", "0.5", "--stitched", "--json", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert "partial p50" in proc.stdout  # the terminal table
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["torch"]
    runs = {r["mode"]: r for r in doc["results"] if r["system"] == "streamer" and r["final_pass_max_s"] > 0}
    assert set(runs) == {"realtime", "unaware", "simulated"}
    stitched = [r for r in doc["results"] if r["system"] == "streamer" and r["final_pass_max_s"] == 0]
    assert [r["mode"] for r in stitched] == ["unaware"] and not stitched[0]["default_settings"]
    assert 0 <= stitched[0]["fidelity_cer"] <= 1 and "final pass" in proc.stdout
    for mode, r in runs.items():
        for key in ("partial_latency_p50_ms", "partial_latency_p95_ms", "commit_latency_p50_ms",
                    "final_latency_p50_ms", "rtf", "cpu_s_per_audio_s", "peak_rss_mb"):
            assert r[key] is not None and r[key] > 0, (mode, key, r[key])
        assert r["partial_latency_p50_ms"] <= r["partial_latency_p95_ms"] < 5000
        assert r["commit_latency_p50_ms"] >= r["partial_latency_p50_ms"]
        assert r["dropped_samples"] == 0
        assert 0 <= r["fidelity_cer"] <= 1 and 0 <= r["identical_share"] <= 1
        assert r["frames_measured"] > 10 and r["frames_never_shown"] == 0
    # the algorithm alone: partial latency is at least half a hop, and about the hop plus look-ahead at most
    u = runs["unaware"]
    assert u["hop_ms"] / 2 <= u["partial_latency_p50_ms"] <= u["hop_ms"] + u["lookahead_ms"] + 100
    bases = {r["system"]: r for r in doc["results"] if r["system"] != "streamer"}
    assert set(bases) == {"offline", "per_segment", "hf_pipeline"}
    for b in bases.values():
        assert b["latency_p50_ms"] > 0 and b["rtf"] > 0 and b["latency_ratio"] > 0
        assert b["latency_p50_ms"] > u["partial_latency_p50_ms"]  # text only after the utterance ends
    assert bases["offline"]["fidelity_cer"] == 0.0  # the offline decode is the reference
    head = doc["headline_candidate"]
    assert head["idle_cpu_percent"] >= 0 and set(head["baselines"]) == set(bases)


class SlowLocalModel:
    """The hand-built local model of the stitching tests, taking a fixed wall time per window."""

    def __init__(self, seconds: float) -> None:
        from helpers import LocalModel

        self.inner = LocalModel()
        self.geometry = self.inner.geometry
        self.vocabulary = self.inner.vocabulary
        self.seconds = seconds

    def logits(self, audio, start_sample=None):
        import time

        time.sleep(self.seconds)
        return self.inner.logits(audio, start_sample)


@pytest.fixture(scope="module")
def smoke_work():
    from streamer.bench.suite import Workload
    from streamer.core.config import Config

    return Workload.build("smoke", Config())


def _summary(mode, seconds, work):
    from streamer.bench.runs import RUNNERS
    from streamer.bench.suite import summarize_run
    from streamer.core.config import Config

    model = SlowLocalModel(seconds)
    model.quantized, model.dtype, model.device, model.parameters, model.reuse_mode = False, None, "cpu", 0, "off"
    from streamer.model.reuse import ReuseCounters

    model.counters = ReuseCounters()
    run = RUNNERS[mode](model, Config(), work.session.audio)
    return summarize_run(run, work, model, Config(), None)


@pytest.mark.slow
def test_simulated_mode_adds_the_compute_time_to_the_algorithms_latency(smoke_work):
    unaware = _summary("unaware", 0.05, smoke_work)
    simulated = _summary("simulated", 0.05, smoke_work)
    # 50 ms per 240 ms hop: never behind (windows held during a hangover after an early final pass resume
    # with one catch-up window where the speech goes on, so the simulated run may have a few fewer windows)
    assert simulated["max_lag_s"] < 0.2 and unaware["windows"] - 3 <= simulated["windows"] <= unaware["windows"]
    extra = simulated["partial_latency_p50_ms"] - unaware["partial_latency_p50_ms"]
    assert 40 <= extra <= 150, (unaware["partial_latency_p50_ms"], simulated["partial_latency_p50_ms"])


@pytest.mark.slow
def test_simulated_mode_falls_behind_and_catches_up_when_compute_exceeds_the_hop(smoke_work):
    unaware = _summary("unaware", 0.0, smoke_work)
    slow = _summary("simulated", 0.4, smoke_work)  # 400 ms per 240 ms hop
    assert slow["windows"] < unaware["windows"]  # several hops per step once behind
    assert slow["max_lag_s"] > 0.3
    assert slow["partial_latency_p50_ms"] > unaware["partial_latency_p50_ms"] + 300


@pytest.mark.slow
def test_simulated_cpu_mode_counts_the_cpu_time_of_the_worker_not_its_waits(smoke_work):
    """simulated-cpu (a core of its own): a step that waits 400 ms without computing costs nothing there,
    where the wall-clock simulation falls behind."""
    unaware = _summary("unaware", 0.0, smoke_work)
    waiting = _summary("simulated-cpu", 0.4, smoke_work)
    assert waiting["mode"] == "simulated-cpu" and waiting["max_lag_s"] < 0.2
    assert waiting["partial_latency_p50_ms"] < unaware["partial_latency_p50_ms"] + 100


def test_machine_line_names_each_version_with_its_parts_when_merged_parts_differ():
    from streamer.bench.report import markdown_results

    def part(started, transformers):
        return {"seconds": 1.0, "loadavg": [[0.1], [0.2]], "started": started,
                "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": transformers}}

    machine = {"cpu": "X", "cores": 2, "memory_gb": 8, "platform": "p", "python": "3.11.7",
               "torch": "2.13.0+cpu", "transformers": "9.9.9", "torch_threads": 2}
    mixed = {"machine": machine, "parts": {"headline": part("2026-11-22 01:00:00", "5.23.0"),
                                           "demo": part("2026-11-30 15:00:00", "5.24.0"),
                                           "sweep": part("2026-11-22 02:00:00", "5.23.0")}}
    line = next(x for x in markdown_results(mixed).splitlines() if x.startswith("Machine:"))
    assert "transformers 5.23.0 (headline, sweep) / 5.24.0 (demo)," in line
    assert "torch 2.13.0+cpu," in line and "9.9.9" not in line
    same = {"machine": machine, "parts": {"headline": part("2026-11-22 01:00:00", "5.23.0")}}
    line = next(x for x in markdown_results(same).splitlines() if x.startswith("Machine:"))
    assert "transformers 5.23.0," in line
    old = {"machine": machine, "parts": {"headline": {"started": "2026-11-22 01:00:00"}}}  # no versions recorded
    line = next(x for x in markdown_results(old).splitlines() if x.startswith("Machine:"))
    assert "transformers 9.9.9," in line


def test_threads_name_themselves_and_idle_live_reads_their_cpu_and_wake_ups_by_name():
    """streamer's threads carry their names to the OS (top -H, /proc), which is how `streamer bench
    --idle-live-s` tells the capture thread from the worker: a thread that sleeps 50 times shows ~50
    wake-ups under its own name; one that spins shows its CPU."""
    import os
    import threading
    import time

    from streamer.bench.idle_live import per_second, thread_counters
    from streamer.threadname import name_this_thread

    pid = os.getpid()
    go, release = threading.Event(), threading.Event()
    worked = [threading.Event(), threading.Event()]

    def sleeper() -> None:
        name_this_thread()
        go.wait(10)
        for _ in range(50):
            time.sleep(0.002)
        worked[0].set()
        release.wait(10)  # still there when its counters are read

    def spinner() -> None:
        name_this_thread("spin-test")
        worked[0].wait(10)  # after the sleeper (a spinning thread holds the GIL the sleeper wakes for)
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        worked[1].set()
        release.wait(10)

    threads = [threading.Thread(target=sleeper, name="sleeper-test"), threading.Thread(target=spinner)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while {"sleeper-test", "spin-test"} - {t.name for t in thread_counters(pid).values()}:
        assert time.monotonic() < deadline, "the threads never named themselves"
        time.sleep(0.01)
    counters0, t0 = thread_counters(pid), time.monotonic()
    go.set()
    assert all(w.wait(10) for w in worked)
    wall = time.monotonic() - t0
    counters = thread_counters(pid)
    cpu = per_second(counters0, counters, wall, pid, "cpu_ticks", 100 / os.sysconf("SC_CLK_TCK"))
    wakes = per_second(counters0, counters, wall, pid, "wakeups")
    release.set()
    for t in threads:
        t.join(10)
    assert 50 <= wakes["sleeper-test"] * wall <= 60
    assert cpu["spin-test"] * wall >= 20  # 0.3 s of CPU = 30 % of a core-second


@pytest.mark.slow
@pytest.mark.audio
@pytest.mark.parametrize("tui", [False, True], ids=["no-tui", "caption-screen"])
def test_idle_live_measures_the_real_application_thread_by_thread(tmp_path, tui):
    """`streamer bench --idle-live-s`'s measurement, briefly: the demo model listening to a PulseAudio virtual
    microphone (without and with the caption screen in a pseudo-terminal) is found listening, measured, and
    stopped with Ctrl+C (exit 0); its CPU and wake-ups come by thread name: PortAudio's callback thread, the
    capture thread and the worker among them."""
    from streamer.bench.idle_live import measure
    from streamer.bench.pulse import PulseUnavailable

    try:
        r = measure("demo", 2.0, tui, tmp_path)
    except PulseUnavailable as exc:
        pytest.skip(f"no PulseAudio here: {exc}")
    assert r["exit"] == 0 and r["screen"] == ("captions" if tui else "--no-tui")
    assert 1.9 <= r["seconds"] <= 4.0
    assert {"portaudio", "capture", "pipeline-worker"} <= set(r["threads"]) and r["cpu_percent"] > 0
    assert all(r["wakeups_per_s"][name] > 1 for name in ("portaudio", "capture", "pipeline-worker"))
