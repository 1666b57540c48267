"""Cross-stream batching (streamer.server.batching): batched logits equal one window at a time on group-norm
("base": equal lengths only) and layer-norm ("large": attention mask, padded, feature reuse) models, with
windows of different lengths in flight; fairness (a flooding stream gets no more than its row per batch);
the latency budget (a lone window does not wait for company beyond --batch-wait-ms)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np
import pytest

from streamer.core.config import Config, ModelConfig, VadConfig, WindowConfig
from streamer.model.inference import FairLock, WindowRequest
from streamer.server.batching import BatchOptions, BatchScheduler

from helpers import energy_speech, make_tiny_ctc_folder, utterances, wait_for

# -- the scheduler over a stand-in model (fast) ---------------------------------------------------------------


class FakeCTC:
    """What the scheduler uses of a CTCModel: batch_key (by length), lock, logits_batch. Each batch takes
    `step_s` and is recorded (which windows, when)."""

    use_attention_mask = False

    def __init__(self, step_s: float = 0.01) -> None:
        self.lock = FairLock()
        self.step_s = step_s
        self.batches: list[tuple[float, list[int]]] = []  # (start time, request tags)

    def batch_key(self, request: WindowRequest):
        return (len(request.audio),)

    def logits_batch(self, requests):
        self.batches.append((time.monotonic(), [int(r.audio[0]) for r in requests]))
        time.sleep(self.step_s)
        return [np.full((1, 1), r.audio[0], np.float32) for r in requests]


def _req(tag: int, n: int = 100) -> WindowRequest:
    return WindowRequest(None, np.full(n, tag, np.float32), 0)  # type: ignore[arg-type]


def test_the_oldest_window_picks_the_batch_and_equal_lengths_join_it():
    sched = BatchScheduler(FakeCTC(), BatchOptions(max_batch=3))  # type: ignore[arg-type]
    try:
        from concurrent.futures import Future

        from streamer.server.batching import _Queued

        queue = [_Queued(_req(i, n), Future(), 0.0, i) for i, n in enumerate([100, 200, 100, 100, 100])]
        assert [int(q.request.audio[0]) for q in sched.pick(queue)] == [0, 2, 3]  # oldest first, max 3
        assert [int(q.request.audio[0]) for q in sched.pick(queue[1:])] == [1]  # another length: alone
    finally:
        sched.close()


def test_a_flooding_stream_does_not_delay_another_beyond_one_batch():
    """Stream F submits windows back to back as fast as the scheduler answers (faster than real time);
    stream S submits one now and then. Each of S's windows runs in the first or second batch that starts
    after it was queued, never later, and F gets no more than one row per batch."""
    ctc = FakeCTC(step_s=0.005)
    sched = BatchScheduler(ctc, BatchOptions(max_batch=4))  # type: ignore[arg-type]
    stop = threading.Event()
    flood_done = [0]

    def flood():
        while not stop.is_set():
            sched.submit(_req(1)).result(5)
            flood_done[0] += 1

    submitted: list[float] = []
    try:
        t = threading.Thread(target=flood)
        t.start()
        wait_for(lambda: flood_done[0] > 20, "the flood running", 10)
        for _ in range(20):
            submitted.append(time.monotonic())
            assert sched.submit(_req(2)).result(5)[0, 0] == 2
            n = flood_done[0]
            wait_for(lambda n=n: flood_done[0] > n + 2, "the flood going on", 10)
    finally:
        stop.set()
        t.join(10)
        sched.close()
    batches = list(ctc.batches)
    assert all(tags.count(1) <= 1 for _, tags in batches)
    slow_batches = [i for i, (_, tags) in enumerate(batches) if 2 in tags]
    assert len(slow_batches) == len(submitted)
    for at, index in zip(submitted, slow_batches):
        started_after = [i for i, (t0, _) in enumerate(batches) if t0 >= at and i < index]
        assert len(started_after) <= 1, f"a window waited for {len(started_after)} batches of the flood"


def test_a_lone_window_runs_without_waiting_for_company():
    ctc = FakeCTC(step_s=0.0)
    sched = BatchScheduler(ctc, BatchOptions(wait_ms=0))  # type: ignore[arg-type]
    try:
        sched.submit(_req(1)).result(5)
        assert sched.stats.max_queue_wait_s < 0.2
    finally:
        sched.close()


def test_the_batch_wait_is_bounded_and_a_full_batch_goes_at_once():
    ctc = FakeCTC(step_s=0.0)
    sched = BatchScheduler(ctc, BatchOptions(max_batch=2, wait_ms=400))  # type: ignore[arg-type]
    try:
        t0 = time.monotonic()
        sched.submit(_req(1)).result(5)
        waited = time.monotonic() - t0
        assert 0.35 <= waited < 2.0  # held back for company, but only up to the budget
        sched.stats.max_queue_wait_s = 0.0
        sched._cond.acquire()  # queue two at once: the batch is full, nothing to wait for
        try:
            futures = [sched._submit_locked(_req(2)), sched._submit_locked(_req(3))]
        finally:
            sched._cond.release()
        for f in futures:
            f.result(5)
        assert sched.stats.max_queue_wait_s < 0.2
        assert ctc.batches[-1][1] == [2, 3]
    finally:
        sched.close()


def test_closing_fails_the_queued_windows():
    ctc = FakeCTC(step_s=0.0)
    sched = BatchScheduler(ctc)  # type: ignore[arg-type]
    sched.close()
    with pytest.raises(RuntimeError):
        sched.submit(_req(1)).result(5)


# -- batched equals one window at a time, on real (tiny) models ---------------------------------------------


@pytest.fixture(scope="module", params=["base", "large"])
def tiny(request, tmp_path_factory):
    from streamer.model.loading import load_model

    folder = make_tiny_ctc_folder(tmp_path_factory.mktemp(request.param) / "m", request.param)
    model = load_model(ModelConfig(name=str(folder), quantize=False))
    assert model.use_attention_mask == (request.param == "large")
    assert model.reuse_mode == ("local" if request.param == "large" else "off")
    return model


@pytest.mark.slow
def test_logits_batch_of_mixed_windows_equals_each_alone(tiny):
    """One pass over windows of several streams: a first (short) window, steady windows, a catch-up window
    (longer), a final pass over a whole utterance. Group-norm models only get equal lengths together."""
    g = tiny.geometry
    rng = np.random.default_rng(3)
    audio = [rng.normal(0, 0.2, 16000 * 3).astype(np.float32) for _ in range(4)]
    hop = g.stride_samples * 8
    win = g.receptive_field_samples + g.stride_samples * 60
    windows = [(audio[0], 0, win), (audio[1], hop, win), (audio[2], 2 * hop, win),  # steady
               (audio[3], 0, win - 4 * hop), (audio[0], hop, win + 4 * hop), (audio[1], None, len(audio[1]))]
    alone = []
    for a, start, n in windows:
        view = tiny.view()
        alone.append(view.logits(a[(start or 0):(start or 0) + n], start))
    groups = [list(range(6))] if tiny.use_attention_mask else [[0, 1, 2], [3], [4], [5]]
    for group in groups:
        reqs = []
        for i in group:
            a, start, n = windows[i]
            reqs.append(WindowRequest(tiny.view().reuse, a[(start or 0):(start or 0) + n], start))
        with tiny.lock:
            got = tiny.logits_batch(reqs)
        for i, out in zip(group, got):
            assert out.shape == alone[i].shape
            np.testing.assert_allclose(out, alone[i], atol=1e-4)
    if not tiny.use_attention_mask:
        with pytest.raises(ValueError):
            tiny.logits_batch([WindowRequest(tiny.view().reuse, audio[0][:win], 0),
                               WindowRequest(tiny.view().reuse, audio[0][:win + hop], 0)])


@pytest.mark.slow
@pytest.mark.parametrize("wait_ms", [0.0, 20.0])
def test_interleaved_streams_batched_equal_each_stream_alone(tiny, wait_ms):
    """N streams, each a Recognizer on its own thread over a scheduler view (its own feature reuse state),
    fed in 100 ms chunks (first windows short, then steady; the catch-up window of a late stream longer;
    final passes): every window's logits and every final equal that stream run alone, one window at a time,
    and windows of several streams did share passes."""
    from streamer.core.events import AudioChunk, FinalEvent
    from streamer.core.recognizer import Recognizer
    from streamer.core.vad import VadSegmenter

    config = Config(vad=VadConfig(confirm="off"), window=WindowConfig())
    clips = [utterances(10 + i, 2) for i in range(4)]

    class Recorded:
        def __init__(self, view):
            self.view, self.geometry, self.vocabulary, self.calls = view, view.geometry, view.vocabulary, []

        def logits(self, audio, start_sample=None):
            out = self.view.logits(audio, start_sample)
            self.calls.append((start_sample, len(audio), out))
            return out

    def run(view, audio, hops):
        r = Recognizer(view, config, vad=VadSegmenter(config.vad, classifier=energy_speech), max_hops_per_step=hops)
        events = [e for i in range(0, len(audio), 1600) for e in r.feed(AudioChunk(i, audio[i:i + 1600], 16000))]
        return [e.text for e in events + r.finish() if isinstance(e, FinalEvent)]

    hops = [1, 1, 1, 4]  # the last stream commits up to 4 hops per window (catching up: longer windows)
    expected = []
    for audio, h in zip(clips, hops):
        view = Recorded(tiny.view())
        expected.append((run(view, audio, h), view.calls))
    assert all(texts for texts, _ in expected)

    sched = BatchScheduler(tiny, BatchOptions(max_batch=8, wait_ms=wait_ms))
    got: dict[int, tuple[list[str], list]] = {}
    errors: list[BaseException] = []

    def stream(i):
        try:
            view = Recorded(sched.view())
            got[i] = (run(view, clips[i], hops[i]), view.calls)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(clips))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        sched.close()
    assert not errors, errors
    lengths = defaultdict(set)
    for i, (texts, calls) in got.items():
        want_texts, want_calls = expected[i]
        assert texts == want_texts
        assert [(s, n) for s, n, _ in calls] == [(s, n) for s, n, _ in want_calls]
        for (start, n, a), (_, _, b) in zip(calls, want_calls):
            lengths[start is None].add(n)
            np.testing.assert_allclose(a, b, atol=1e-4)
    assert max(sched.stats.sizes) >= 2, f"no windows were batched: {sched.stats.sizes}"
    assert len(lengths[False]) >= 3 and lengths[True], "windows of several lengths and final passes in flight"


# -- the streams benchmark's bookkeeping -----------------------------------------------------------------------


def test_streams_bench_max_n_stops_at_the_first_n_over_the_limit():
    from streamer.bench.streams import markdown, max_streams

    rows = [{"model": "demo", "batch": True, "streams": n, "partial_p50_ms": 100.0, "worst_stream_p95_ms": p95,
             "behind_max_ms": 0.0, "cpu_cores_used": 0.5, "rtf_cpu": 0.1, "dropped_samples": 0, "p95_ok": p95 <= 600}
            for n, p95 in [(1, 300.0), (4, 500.0), (8, 700.0), (16, 550.0)]]
    assert max_streams(rows) == 4
    assert markdown(rows).count("\n") == 2 + len(rows)
