"""GPU-only speed experiments: batching windows and fixed-shape windows (the dtype comparison reuses
suite.speed_part with float32 / float16 / bfloat16 variants)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streamer.bench.suite import load, schedule_windows
from streamer.core.config import ModelConfig, WindowConfig

GPU_SPEED_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", dict(dtype="float32", reuse_features=False)),
    ("fp16", dict(dtype="float16", reuse_features=False)),
    ("bf16", dict(dtype="bfloat16", reuse_features=False)),
    ("fp16+reuse", dict(dtype="float16", reuse_features=True, reuse_group_norm=True)),
]


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int = 20) -> float:
    fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def batching(key: str, window: WindowConfig, audio: np.ndarray, dtype: str = "float16", device: str = "cuda",
             repeats: int = 20) -> list[dict]:
    """Several windows in one forward pass (several streams, or a worker catching up)."""
    import torch

    ctc = load(key, ModelConfig(device=device, dtype=dtype, reuse_features=False))
    n = int((window.left_context_ms + window.hop_ms + window.lookahead_ms) * 16) + 80
    x1 = torch.from_numpy(ctc.normalize(audio[:n]))[None].to(device, ctc.dtype)
    out = []
    for b in (1, 2, 4, 8, 16):
        xb = x1.repeat(b, 1)
        with torch.inference_mode():
            t = _timed(lambda xb=xb: ctc.model(xb), device, repeats)
        out.append({"model": key, "experiment": "batching", "dtype": dtype, "batch": b, "window_ms": round(n / 16, 1),
                    "ms_per_forward": round(t * 1000, 2), "ms_per_window": round(t * 1000 / b, 2)})
    return out


def fixed_shape(key: str, window: WindowConfig, audio: np.ndarray, dtype: str = "float16",
                device: str = "cuda") -> list[dict]:
    """The real schedule of one utterance (windows grow at its start) with variable shapes, with
    cudnn.benchmark autotuning per shape, and with every window left-padded to the steady-state shape."""
    import torch

    ctc = load(key, ModelConfig(device=device, dtype=dtype, reuse_features=False))
    windows = schedule_windows(ctc.geometry, window, audio)
    longest = max(len(w[1]) for w in windows)
    out = []
    for name, bench_flag, pad in (("variable", False, False), ("variable+cudnn.benchmark", True, False),
                                  ("fixed (left-padded)", True, True)):
        torch.backends.cudnn.benchmark = bench_flag
        ts: list[float] = []
        for _rep in range(2):  # the first pass includes per-shape set-up; report the second
            ts = []
            for _, a in windows:
                x = ctc.normalize(a)
                if pad:
                    x = np.concatenate([np.zeros(longest - len(x), np.float32), x])
                xt = torch.from_numpy(x)[None].to(device, ctc.dtype)
                _sync(device)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    ctc.model(xt)
                _sync(device)
                ts.append(time.perf_counter() - t0)
        out.append({"model": key, "experiment": "shapes", "variant": name, "dtype": dtype, "windows": len(windows),
                    "shapes": len({len(w[1]) for w in windows}), "ms_p50": round(float(np.median(ts)) * 1000, 2),
                    "ms_p95": round(float(np.percentile(ts, 95)) * 1000, 2)})
    torch.backends.cudnn.benchmark = False
    return out
