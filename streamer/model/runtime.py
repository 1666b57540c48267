"""Process-wide settings of torch's CPU runtime, made by an explicit call before torch is imported (never as
an import side effect)."""

from __future__ import annotations

import os
import sys

from streamer.core.config import OMP_WAIT_POLICY, ONEDNN_PRIMITIVE_CACHE_CAPACITY
from streamer.errors import ConfigError


def configure_openmp() -> None:
    """Also caps oneDNN's cache of compiled kernels (ONEDNN_PRIMITIVE_CACHE_CAPACITY, read once too).
    torch's OpenMP runtime reads OMP_WAIT_POLICY once, when torch is first imported, so entry points call
    this first. A value already in the environment wins; STREAMER_OMP_WAIT_POLICY (even empty) overrides the
    default, for the benchmark's thread study. Does nothing once torch is imported."""
    policy = os.environ.get("STREAMER_OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    if "torch" in sys.modules:
        return
    if policy:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_PRIMITIVE_CACHE_CAPACITY))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset), else
    the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def check_threads(threads: int) -> None:
    """--threads within 0 (torch's default) .. the usable CPUs: far more makes OpenMP hang or crash
    (--threads 10000 hangs, 99999 segfaults) and any more only oversubscribes the cores."""
    cpus = usable_cpus()
    if threads > cpus:
        raise ConfigError(f"--threads {threads} is more than the {cpus} CPU{'s' if cpus > 1 else ''} this process may use",
                          f"use 1 to {cpus}, or 0 for torch's default")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (avx512_bf16 or AMX in /proc/cpuinfo's flags). Without them
    oneDNN emulates bf16, several times slower than float32 (tools/train_demo_model.py measured ~5x on AVX2)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def release_free_memory() -> None:
    """Hand memory that was freed back to the system (glibc keeps freed heap pages of a large model load and
    of long passes resident; malloc_trim returns them). Nothing where the C library has no malloc_trim."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ThreadTuner:
    """torch's intra-op thread count for model steps, chosen from the CPUs this process may use and from the
    step times it measures, and changed at run time when they change.

    Two OpenMP threads on a 2-core machine with one core busy elsewhere wait on each other: a step took 205 ms
    against 103 ms with one thread (BENCHMARKS.md, thread settings), while on an idle machine two threads are
    faster. So the tuner starts with what `choose` measured, and every THREAD_PROBE_EVERY steps (or at once
    when the steps slow down by THREAD_SLOWDOWN) runs THREAD_PROBE_STEPS steps with another count; it keeps
    whichever took less time per second of audio (by THREAD_SWITCH_MARGIN). Step times are taken per input
    sample so windows of other lengths compare. `fixed`: --threads N was given; nothing changes.

    Each thread that runs the model applies the current choice itself (OpenMP thread counts belong to the
    calling thread)."""

    def __init__(self, cpus: int, threads: int, fixed: bool = False) -> None:
        from streamer.core.config import THREAD_PROBE_EVERY, THREAD_PROBE_STEPS, THREAD_SLOWDOWN, THREAD_SWITCH_MARGIN

        self.cpus = cpus
        self.threads = threads
        self.fixed = fixed
        self.candidates = list(range(1, cpus + 1)) if cpus <= 4 else sorted({1, cpus // 2, cpus})
        self.changes = 0
        self._every, self._probe_steps = THREAD_PROBE_EVERY, THREAD_PROBE_STEPS
        self._slowdown, self._margin = THREAD_SLOWDOWN, THREAD_SWITCH_MARGIN
        self._recent: list[float] = []  # per-sample step times of the current choice, latest last
        self._best: float | None = None  # the current choice's steady time per sample, when settled
        self._probe: list[float] = []
        self._probing: int | None = None
        self._since_probe = 0
        self._next = 0  # which other candidate the next probe tries
        import threading

        self._applied = threading.local()

    @property
    def description(self) -> str:
        mode = "fixed" if self.fixed else "auto"
        return f"{self.threads} thread{'s' if self.threads != 1 else ''} of {self.cpus} CPU{'s' if self.cpus != 1 else ''} ({mode})"

    @property
    def running(self) -> int:
        """The count the next step runs with."""
        return self._probing or self.threads

    def apply(self) -> None:
        """Before a step, on the thread that runs it."""
        n = self.running
        if getattr(self._applied, "n", None) != n:
            import torch

            torch.set_num_threads(n)
            self._applied.n = n

    def observe(self, samples: int, seconds: float) -> None:
        """After a step of `samples` input samples that took `seconds`."""
        if self.fixed or samples <= 0 or len(self.candidates) < 2:
            return
        per = seconds / samples
        if self._probing is not None:
            self._probe.append(per)
            if len(self._probe) >= self._probe_steps:
                self._finish_probe()
            return
        self._recent.append(per)
        del self._recent[:-self._probe_steps * 3]
        self._since_probe += 1
        if len(self._recent) < self._probe_steps:
            return
        now = _median(self._recent[-self._probe_steps:])
        if self._best is None or now < self._best:
            self._best = now
        slowed = now > self._best * self._slowdown
        if self._since_probe >= self._every or slowed:
            others = [c for c in self.candidates if c != self.threads]
            self._probing = others[self._next % len(others)]
            self._next += 1
            self._probe = []

    def _finish_probe(self) -> None:
        assert self._probing is not None
        probe = _median(self._probe)
        current = _median(self._recent[-self._probe_steps:])
        if probe * self._margin < current:
            self.threads = self._probing
            self.changes += 1
            self._recent = self._probe[:]
            self._best = probe
        self._probing = None
        self._probe = []
        self._since_probe = 0


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def choose_threads(step, cpus: int, repeats: int = 2) -> int:
    """The thread count (1 .. cpus, at most 4 tried) whose `step()` (one model pass) is fastest now: the
    best of `repeats` runs each. Used once at load; the ThreadTuner follows changes after."""
    import time

    import torch

    best, best_t = 1, float("inf")
    for n in sorted({1, min(cpus, 2), min(cpus, 4), cpus} if cpus > 4 else range(1, cpus + 1)):
        torch.set_num_threads(n)
        t = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            t = min(t, time.perf_counter() - t0)
        if t < best_t * (1 / 1.05 if n > best else 1.0):  # more threads must win clearly
            best, best_t = n, t
    torch.set_num_threads(best)
    return best
