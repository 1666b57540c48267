"""Process-wide settings of torch's CPU runtime, made by an explicit call before torch is imported (never as
an import side effect)."""

from __future__ import annotations

import os
import sys

from streamer.core.config import OMP_WAIT_POLICY


def configure_openmp() -> None:
    """torch's OpenMP runtime reads OMP_WAIT_POLICY once, when torch is first imported, so entry points call
    this first. A value already in the environment wins; STREAMER_OMP_WAIT_POLICY (even empty) overrides the
    default, for the benchmark's thread study. Does nothing once torch is imported."""
    policy = os.environ.get("STREAMER_OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    if policy and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)
