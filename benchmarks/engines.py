"""Inference engines on the same windows: torch int8 dynamic quantisation (what streamer runs: its
convolutions in bf16 where the CPU computes bf16 natively; `torch-fp32conv` keeps them float32), ONNX Runtime
int8 (the model exported to ONNX, its MatMuls quantised dynamically) and torch.compile of the int8 model, for
the base-size model (random init, BENCHMARKS.md "Models"), 1 and 2 threads, one engine per process (peak RSS
is that process's). Writes a JSON list and prints a markdown table.

    python benchmarks/engines.py [--json benchmarks/results/engines.json] [--engines torch,torch-fp32conv,ort,compile]

Needs `onnx` and `onnxruntime` for the ONNX rows: pip install 'streamer[engines]'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WINDOW = 19920  # samples of a steady window at the defaults (1245 ms)
STEPS = 30


def export(model_dir: Path, out: Path) -> Path:
    """ONNX float32 and int8 (dynamic, MatMul weights) of the checkpoint, once."""
    int8 = out / "model.int8.onnx"
    if int8.exists():
        return int8
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForCTC

    out.mkdir(parents=True, exist_ok=True)
    m = AutoModelForCTC.from_pretrained(model_dir).eval()
    torch.onnx.export(m, (torch.randn(1, WINDOW),), str(out / "model.onnx"), input_names=["input_values"],
                      output_names=["logits"], dynamic_axes={"input_values": {1: "n"}, "logits": {1: "t"}},
                      opset_version=17, dynamo=False)
    quantize_dynamic(str(out / "model.onnx"), str(int8), weight_type=QuantType.QInt8)
    (out / "model.onnx").unlink()
    return int8


def measure(engine: str, threads: int, model_dir: Path, onnx_path: Path | None) -> dict:
    """One engine in this process: median / p90 step over STEPS windows after 3 warm-up ones."""
    import numpy as np

    rng = np.random.default_rng(0)
    xs = [rng.normal(0, 1, WINDOW).astype(np.float32) for _ in range(STEPS)]
    t_load = time.perf_counter()
    if engine == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as OMP_WAIT_POLICY=PASSIVE
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        run = lambda x: sess.run(None, {"input_values": x[None]})[0]  # noqa: E731
    else:
        from streamer.model import configure_openmp

        configure_openmp()
        import torch

        from streamer.core.config import ModelConfig
        from streamer.model import load_model

        conv_bf16 = False if engine == "torch-fp32conv" else None  # None: auto (bf16 where the CPU has it)
        ctc = load_model(ModelConfig(name=str(model_dir), threads=threads, reuse_features=False,
                                     conv_bfloat16=conv_bf16), warmup=False)
        model = torch.compile(ctc.model, dynamic=False) if engine == "compile" else ctc.model

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)[None]).logits.numpy()
    first = time.perf_counter()
    ref = run(xs[0])
    first = time.perf_counter() - first
    for x in xs[1:3]:
        run(x)
    ts = []
    for x in xs:
        t = time.perf_counter()
        run(x)
        ts.append(time.perf_counter() - t)
    from streamer.bench.memory import rss_mb

    conv = "-" if engine == "ort" else ("bf16" if ctc.conv_bfloat16 else "float32")
    return {"engine": engine, "conv": conv, "threads": threads, "step_ms_p50": round(float(np.median(ts)) * 1000, 1),
            "step_ms_p90": round(float(np.percentile(ts, 90)) * 1000, 1), "first_call_s": round(first, 2),
            "load_s": round(time.perf_counter() - t_load, 1), "peak_rss_mb": round(rss_mb()[1]),
            "loadavg": [round(v, 2) for v in os.getloadavg()], "logits_checksum": float(np.abs(ref).sum())}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--engines", default="torch,torch-fp32conv,ort,compile")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--json", default=None)
    p.add_argument("--one", nargs=2, metavar=("ENGINE", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from streamer.bench.models import cache_dir, model_folder

    model_dir = Path(model_folder("base"))
    onnx_dir = cache_dir() / "onnx" / "base"
    if args.one:
        engine, threads = args.one[0], int(args.one[1])
        print(json.dumps(measure(engine, threads, model_dir, onnx_dir / "model.int8.onnx")))
        return 0
    engines = [e for e in args.engines.split(",") if e]
    if "ort" in engines:
        export(model_dir, onnx_dir)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for engine in engines:  # adjacent, so a change of machine load hits them alike
            r = subprocess.run([sys.executable, __file__, "--one", engine, str(threads)], capture_output=True, text=True)
            line = (r.stdout.strip().splitlines() or ["{}"])[-1]
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append({"engine": engine, "threads": threads, "error": (r.stderr.strip().splitlines() or ["?"])[-1]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| engine | conv | threads | step ms p50 | p90 | first call s | peak RSS MB | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['engine']} | | {r['threads']} | failed: {r['error'][:80]} | | | | |")
        else:
            print(f"| {r['engine']} | {r['conv']} | {r['threads']} | {r['step_ms_p50']} | {r['step_ms_p90']} | {r['first_call_s']} | "
                  f"{r['peak_rss_mb']} | {r['loadavg'][0]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
