"""Three ways to drive the streaming core over a session, each giving the events with wall times.

- realtime: the real pipeline (ring buffer, worker thread, Recognizer) fed by a source thread that delivers
  the audio in capture-sized blocks at wall-clock pace. Compute delays show as latency; if the worker falls
  behind it commits several hops per step (catch-up) and, if the ring buffer overflows, drops (counted).
- unaware: computation-unaware. The Recognizer is fed block by block directly, with a clock that reads the
  arrival time of the audio fed so far: compute counts as instantaneous, so latencies are the algorithm's
  own (hop, look-ahead, VAD hangover, block size). One hop per step, as fast as the machine goes.
- simulated: computation-aware without waiting: one virtual worker reads every block that has arrived by
  the time it is free, and each feed takes the wall time it really took; events get virtual times. It
  tracks the realtime mode closely (checked in BENCHMARKS.md) and is used for sweeps.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field, replace

import numpy as np

from streamer.app.session import Session, SessionOptions
from streamer.audio.replay import BlockReplay, paced_blocks
from streamer.core.config import MODEL_SAMPLE_RATE, Config
from streamer.core.events import AudioChunk, Event, StatsEvent
from streamer.core.recognizer import Recognizer
from streamer.model.silero import load_silero

#: Audio is delivered in 20 ms blocks, the size of a typical capture callback (e.g. 960 frames at 48 kHz).
BLOCK_MS = 20
MODES = ("realtime", "unaware", "simulated", "simulated-cpu")


def block_samples(block_ms: int = BLOCK_MS) -> int:
    return MODEL_SAMPLE_RATE * block_ms // 1000


@dataclass
class RunResult:
    mode: str
    events: list[Event]
    #: Wall time at which sample 0 of the stream arrived (same clock as the events).
    t0: float
    audio_s: float
    wall_s: float
    compute_s: float
    cpu_s: float
    windows: int
    dropped_samples: int = 0
    max_lag_s: float = 0.0
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)

    def arrival(self, sample: int | np.ndarray) -> float | np.ndarray:
        return self.t0 + np.asarray(sample) / MODEL_SAMPLE_RATE


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset(model) -> None:
    if hasattr(model, "reset"):
        model.reset()


def _pass_counters(model):
    """A copy of the model's final-pass prefetch counters (streamer.model.passfeatures), None without them."""
    passes = getattr(model, "passes", None)
    return replace(passes.counters) if passes is not None else None


def _pieces_share(model, before) -> dict:
    """The share of the final passes' conv frames that came from pieces since `before` (_pass_counters)."""
    after = _pass_counters(model)
    if after is None or before is None or after.frames == before.frames:
        return {}
    return {"final_pass_frames_from_pieces": round((after.frames_prefetched - before.frames_prefetched)
                                                   / (after.frames - before.frames), 3)}


def run_realtime(model, config: Config, audio: np.ndarray, block_ms: int = BLOCK_MS, final_model=None) -> RunResult:
    """The application's own Session, fed by a paced replay of `audio` in capture-sized blocks (with
    `final_model`: the Whisper final pass, streamer.app.finals)."""
    clock = time.perf_counter
    events: list[Event] = []
    max_lag = [0.0]
    sources: list[BlockReplay] = []

    def collect(e: Event) -> None:
        events.append(e)
        if isinstance(e, StatsEvent):
            max_lag[0] = max(max_lag[0], e.lag_s)

    def paced(ring, stop) -> BlockReplay:
        source = BlockReplay(paced_blocks(audio, block_samples(block_ms)), ring, "realtime", stop, clock,
                             name="bench-source")
        sources.append(source)
        return source

    session = Session(model, paced, SessionOptions(config, catch_up=True), handlers=[collect], clock=clock,
                      final_model=final_model)
    pieces_before = _pass_counters(model)
    cpu0, w0 = time.process_time(), clock()
    with session:
        while not session.wait(0.25):
            pass
    wall, cpu = clock() - w0, time.process_time() - cpu0
    session.raise_errors()
    finals = session.final_pass
    extra = {} if finals is None else {"final_pass_compute_s": round(finals.compute_s, 3), "final_pass_decoded": finals.decoded,
                                       "final_pass_suppressed": finals.suppressed, "final_pass_empty": finals.empty,
                                       "final_pass_disagreements": finals.disagreements,
                                       "final_pass_early_decodes": finals.early_decodes,
                                       "final_pass_early_used": finals.early_used,
                                       "final_pass_early_wasted_s": round(finals.early_wasted_s, 3)}
    source = sources[0]
    assert source.started_at is not None
    rec = session.recognizer
    governor = session.worker.governor
    shed = governor.shed_partials if governor is not None else 0
    hop_ms = round(rec.schedule.hop_frames * rec.geometry.frame_s * 1000)
    return RunResult("realtime", events, source.started_at, len(audio) / MODEL_SAMPLE_RATE, wall, rec.compute_s,
                     cpu, rec.windows_run, session.dropped_samples(), max_lag[0], _peak_rss_mb(),
                     {"source_late_max_ms": round(source.late_s * 1000, 1), "skipped_partials": rec.skipped_partials + shed,
                      "hop_ms_end": hop_ms, **extra, **_pieces_share(model, pieces_before)})


def run_unaware(model, config: Config, audio: np.ndarray, block_ms: int = BLOCK_MS) -> RunResult:
    _reset(model)
    now = [0.0]
    rec = Recognizer(model, config, clock=lambda: now[0], max_hops_per_step=1, silero=load_silero)
    block = block_samples(block_ms)
    events: list[Event] = []
    cpu0, w0 = time.process_time(), time.perf_counter()
    for i in range(0, len(audio), block):
        chunk = AudioChunk(i, audio[i:i + block], MODEL_SAMPLE_RATE)
        now[0] = chunk.end_sample / MODEL_SAMPLE_RATE
        events.extend(rec.feed(chunk))
    events.extend(rec.finish())
    wall, cpu = time.perf_counter() - w0, time.process_time() - cpu0
    return RunResult("unaware", events, 0.0, len(audio) / MODEL_SAMPLE_RATE, wall, rec.compute_s, cpu,
                     rec.windows_run, 0, 0.0, _peak_rss_mb())


def run_simulated(model, config: Config, audio: np.ndarray, block_ms: int = BLOCK_MS,
                  cpu_clock: bool = False) -> RunResult:
    """`cpu_clock` (mode simulated-cpu): each feed takes the CPU time of this thread instead of its wall time,
    which is what it takes on a core of its own with one torch thread (--threads 1): the figure a process
    gets beside one busy core on a 2-core machine, measured the same whatever else loads the machine."""
    _reset(model)
    block = block_samples(block_ms)
    state = {"v": 0.0, "p": 0.0}
    now = time.thread_time if cpu_clock else time.perf_counter

    def clock() -> float:  # virtual time: when this feed started + how long it has been running
        return state["v"] + (now() - state["p"])

    rec = Recognizer(model, config, clock=clock, max_hops_per_step=config.window.max_catch_up_hops, silero=load_silero)
    pieces_before = _pass_counters(model)
    events: list[Event] = []
    n = len(audio)
    pos, free_at, max_lag = 0, 0.0, 0.0
    cpu0, w0 = time.process_time(), time.perf_counter()
    while pos < n:
        next_end = min(pos + block, n)
        t = max(free_at, next_end / MODEL_SAMPLE_RATE)  # the worker wakes when free and audio is there
        arrived = min(n, int(t * MODEL_SAMPLE_RATE) // block * block) if t * MODEL_SAMPLE_RATE < n else n
        arrived = max(arrived, next_end)
        max_lag = max(max_lag, (arrived - pos) / MODEL_SAMPLE_RATE)
        state["v"], state["p"] = t, now()
        events.extend(rec.feed(AudioChunk(pos, audio[pos:arrived], MODEL_SAMPLE_RATE)))
        free_at = clock()
        pos = arrived
    state["v"], state["p"] = max(free_at, n / MODEL_SAMPLE_RATE), now()
    events.extend(rec.finish())
    wall, cpu = time.perf_counter() - w0, time.process_time() - cpu0
    mode = "simulated-cpu" if cpu_clock else "simulated"
    return RunResult(mode, events, 0.0, n / MODEL_SAMPLE_RATE, wall, rec.compute_s, cpu, rec.windows_run,
                     0, max_lag, _peak_rss_mb(), _pieces_share(model, pieces_before))


RUNNERS = {"realtime": run_realtime, "unaware": run_unaware, "simulated": run_simulated,
           "simulated-cpu": lambda model, config, audio: run_simulated(model, config, audio, cpu_clock=True)}
