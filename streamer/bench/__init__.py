"""`streamer bench` (see streamer.bench.cli): latency, compute and fidelity of streamer and of the
alternatives on the same audio and model. Modules: cli (arguments, one run), parts (what one process
measures), full (all parts merged into BENCHMARKS.md), suite / runs / baselines / metrics / corpus / report."""

from streamer.bench.cli import main

__all__ = ["main"]
