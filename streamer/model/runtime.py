"""Process-wide settings of torch's CPU runtime, made by an explicit call before torch is imported (never as
an import side effect)."""

from __future__ import annotations

import os
import sys

from streamer.core.config import OMP_WAIT_POLICY
from streamer.errors import ConfigError


def configure_openmp() -> None:
    """torch's OpenMP runtime reads OMP_WAIT_POLICY once, when torch is first imported, so entry points call
    this first. A value already in the environment wins; STREAMER_OMP_WAIT_POLICY (even empty) overrides the
    default, for the benchmark's thread study. Does nothing once torch is imported."""
    policy = os.environ.get("STREAMER_OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    if policy and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)


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
