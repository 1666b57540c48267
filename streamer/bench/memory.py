"""Where a model's memory goes: resident set after each stage of loading (import, processor, weights,
quantisation or the int8 cache, warm-up) and after model passes of given lengths (the windows, the final
pass), with the process's peak so far. Run in a fresh process (`streamer bench --memory`), so the figures are
the stages' own; `tracemalloc` adds the Python-level allocations of each stage (torch's tensors are not
Python objects: the resident set is the figure that counts)."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import asdict, dataclass, replace

from streamer.core.config import ModelConfig


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process in MB, from /proc (0 where there is none)."""
    now = peak = 0.0
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    now = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return now, peak


@dataclass(frozen=True)
class Stage:
    stage: str
    rss_mb: float
    peak_rss_mb: float
    python_mb: float  # tracemalloc: Python allocations live after the stage
    seconds: float


def load_report(model: ModelConfig, passes_s: tuple[float, ...] = (1.245, 20.0), trace_python: bool = False) -> list[Stage]:
    """Stages of loading `model` (its name: a folder, hub id or 'demo'), then one pass of each length. With
    `trace_python`, tracemalloc's figure too (it costs memory and time of its own: the RSS figures then
    include its bookkeeping)."""
    import numpy as np

    from streamer.model import configure_openmp

    configure_openmp()
    stages: list[Stage] = []
    t0 = time.perf_counter()
    if trace_python:
        tracemalloc.start()

    def mark(name: str) -> None:
        now, peak = rss_mb()
        stages.append(Stage(name, round(now, 1), round(peak, 1),
                            round(tracemalloc.get_traced_memory()[0] / 2**20, 1), round(time.perf_counter() - t0, 2)))

    mark("start")
    from streamer.model import load_model

    ctc = load_model(model, warmup=True, on_stage=mark)
    rng = np.random.default_rng(0)
    for seconds in passes_s:
        audio = rng.normal(0, 0.1, int(seconds * ctc.sample_rate)).astype(np.float32)
        ctc.reset()
        ctc.logits(audio, None)
        mark(f"pass {seconds:g} s")
    if trace_python:
        tracemalloc.stop()
    return stages


def memory_main(args) -> int:
    import json
    from pathlib import Path

    from streamer.bench.models import model_folder
    from streamer.cli.args import config_from_args

    cfg = replace(config_from_args(args, args.model).model, name=model_folder(args.model))
    stages = load_report(cfg, trace_python=args.tracemalloc)
    print(f"{'stage':24} {'RSS MB':>8} {'peak MB':>8} {'python MB':>10} {'s':>7}")
    for s in stages:
        print(f"{s.stage:24} {s.rss_mb:8.0f} {s.peak_rss_mb:8.0f} {s.python_mb:10.1f} {s.seconds:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "stages": [asdict(s) for s in stages]}, indent=1))
    return 0
