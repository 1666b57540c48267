"""Silero VAD on torch: time per 512-sample window with the recogniser's two torch threads as they are, and
as `SileroTorch.process` runs it (SILERO_TORCH_THREADS, then the caller's count back), on an idle machine and
beside a busy core (another process spinning). The 52 s real recording's first 400 windows, the first 20 left
out (warm-up); median, 90th percentile and mean in microseconds.

    python benchmarks/silero_threads.py [--busy-cores 1]

Why one thread: a second OpenMP thread saves a little on an idle machine, and beside a busy core the team waits
for it (the mean grows several times while the median does not)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = ROOT / "assets" / "audio" / "longform_realtimestt_demo_52s.wav"
BUSY = "while True: pass"


def timings(run, windows: list[np.ndarray]) -> tuple[float, float, float]:
    ts = []
    for w in windows:
        t0 = time.perf_counter()
        run(w)
        ts.append(time.perf_counter() - t0)
    us = np.array(ts[20:]) * 1e6
    return float(np.median(us)), float(np.percentile(us, 90)), float(us.mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy-cores", type=int, default=1, help="also beside this many spinning processes (0: idle only)")
    args = p.parse_args()
    import torch

    from streamer.audio.files import read_16k
    from streamer.model.silero import SILERO_TORCH_THREADS, SileroTorch

    audio = read_16k(CLIP)
    windows = [np.ascontiguousarray(audio[i * 512:(i + 1) * 512]) for i in range(400)]
    vad = SileroTorch(16000)
    model = vad._model

    def as_is(w: np.ndarray) -> float:  # the window on whatever thread count the caller has
        with torch.inference_mode():
            return float(model(torch.from_numpy(w), 16000))

    print(f"torch {torch.__version__}; SILERO_TORCH_THREADS = {SILERO_TORCH_THREADS}; the caller has 2 threads")
    print("| machine | run | median us | p90 us | mean us |\n|---|---|---|---|---|")
    for busy in sorted({0, args.busy_cores}):
        procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
        try:
            time.sleep(0.5 if busy else 0)
            for name, run in (("2 threads (as before)", as_is), ("SileroTorch.process", vad.process)) * 2:
                torch.set_num_threads(2)
                vad._model.reset_states()
                med, p90, mean = timings(run, windows)
                print(f"| {'idle' if not busy else f'{busy} busy core'} | {name} | {med:.0f} | {p90:.0f} | {mean:.0f} |")
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
