"""`streamer bench --full`: every part in its own process (clean peak RSS), merged into one JSON, a plot and
BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from streamer.bench.cli import csv, say
from streamer.bench.corpus import repo_root
from streamer.core.config import Config
from streamer.errors import ConfigError

#: The parts of a full CPU run: (name, arguments). Each runs in its own process (clean peak RSS).
FULL_CPU = [
    ("headline", ["--model", "base", "--clips", "all", "--modes", "realtime,unaware", "--baselines", "all", "--idle-s", "5"]),
    ("demo", ["--model", "demo", "--clips", "all", "--realtime-clips", "sweep", "--modes", "realtime,unaware",
              "--baselines", "all", "--variants", "--stitched"]),
    # The demo model only recognises synthetic speech: its fidelity target is measured where it has text to keep.
    ("demo_synthetic", ["--model", "demo", "--clips", "synthetic", "--modes", "realtime,unaware",
                        "--baselines", "offline,per_segment", "--stitched"]),
    ("large", ["--model", "large", "--clips", "sweep", "--modes", "realtime", "--baselines", "offline,per_segment"]),
    ("speed", ["--speed", "demo,base,large"]),
    ("threads", ["--threads-study", "--model", "base", "--speed-s", "4"]),
    ("sweep", ["--sweep", "--model", "base", "--clips", "quick", "--modes", "simulated"]),
]
#: The GPU suite, sized to finish in under five minutes on a lent GPU (benchmarks/gpu_bench.sh): the dtype
#: and batching speed work, the headline (base fp16, realtime, the quick clips) and the large model. The
#: parts after them run only when named (--parts).
FULL_GPU = [
    ("speed", ["--speed", "base,large", "--device", "cuda", "--speed-variants", "fp32,fp16", "--speed-s", "4"]),
    ("headline", ["--model", "base", "--device", "cuda", "--clips", "quick", "--modes", "realtime,unaware",
                  "--baselines", "offline", "--idle-s", "3"]),
    ("large", ["--model", "large", "--device", "cuda", "--clips", "smoke", "--modes", "realtime", "--baselines", "none"]),
    ("hop120", ["--model", "base", "--device", "cuda", "--clips", "quick", "--modes", "realtime", "--baselines", "none",
                "--hop-ms", "120"]),
    ("demo", ["--model", "demo", "--device", "cuda", "--clips", "quick", "--modes", "realtime", "--baselines", "offline"]),
    ("sweep", ["--sweep", "--model", "base", "--device", "cuda", "--clips", "quick", "--modes", "simulated"]),
]
#: Parts of FULL_GPU run when --parts names none.
GPU_DEFAULT_PARTS = ("speed", "headline", "large")
#: A part running longer is stopped (its figures are missing from the merge; rerun it alone).
PART_TIMEOUT_S = float(os.environ.get("STREAMER_BENCH_PART_TIMEOUT_S", "0")) or None



# software versions a part records in its own "machine" (parts merged from separate runs may differ)
VERSION_KEYS = ("python", "torch", "transformers", "numpy")


def merge(doc: dict, part: dict, name: str) -> None:
    doc["results"] += part.get("results", [])
    for key in ("speed", "sweep", "threads", "notes", "multi_utterance", "multi_utterance_study"):
        doc.setdefault(key, [])
        doc[key] += part.get(key, [])
    if part.get("idle"):
        doc["idle"] = part["idle"]
    h = part.get("headline_candidate")
    if h and name == "headline":
        doc["gpu_headline" if doc.get("gpu") else "headline"] = h
    elif part.get("gpu_headline") and name == "headline":
        doc["gpu_headline"] = part["gpu_headline"]


def full(args) -> int:
    """Run the parts of the CPU (or GPU) suite, each in its own process writing OUT/part-NAME.json, then
    merge every part file present into OUT/cpu.json (gpu.json), the plot and BENCHMARKS.md. A part that
    failed or timed out can be rerun alone with --parts NAME; --parts none only merges."""
    from streamer.bench import report
    from streamer.bench.suite import loadavg, machine

    gpu = args.gpu
    suite_parts = FULL_GPU if gpu else FULL_CPU
    default = [n for n, _ in suite_parts if not gpu or n in GPU_DEFAULT_PARTS]
    wanted = default if args.parts is None else [n for n in csv(args.parts) if n != "none"]
    unknown = [n for n in wanted if n not in dict(suite_parts)]
    if unknown:
        raise ConfigError(f"unknown part(s) {', '.join(unknown)}", f"use {', '.join(n for n, _ in suite_parts)} or none")
    out_dir = Path(args.out or repo_root() / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = "gpu-" if gpu else "cpu-"
    json_path = Path(args.json or out_dir / ("gpu.json" if gpu else "cpu.json"))
    env = dict(os.environ, PYTHONPATH=str(repo_root()) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name, part_args in suite_parts:
        if name not in wanted:
            continue
        part_json = out_dir / f"part-{prefix}{name}.json"
        t0, load0 = time.time(), loadavg()
        say(f"part {name}: {' '.join(part_args)}")
        cmd = [sys.executable, "-m", "streamer", "bench", *part_args, "--json", str(part_json)]
        try:
            rc = subprocess.call(cmd, env=env, cwd=repo_root(), timeout=PART_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"part {name} stopped after {PART_TIMEOUT_S:g} s")
            rc = 124
        if rc != 0:
            say(f"part {name} failed (exit {rc})")
            part_json.unlink(missing_ok=True)
            continue
        part = json.loads(part_json.read_text())
        part.update(part_seconds=round(time.time() - t0, 1), part_loadavg=[load0, loadavg()])
        part_json.write_text(json.dumps(part, indent=1) + "\n")
    doc = {"command": f"streamer bench --full{' --gpu' if gpu else ''}", "gpu": gpu, "machine": machine(),
           "defaults": {**{k: getattr(Config().window, k) for k in ("hop_ms", "left_context_ms", "lookahead_ms")},
                        "quantize": Config().model.quantize, "threads": Config().model.threads},
           "results": [], "speed": [], "sweep": [], "threads": [], "notes": [], "parts": {}}
    for name, _ in suite_parts:
        part_json = out_dir / f"part-{prefix}{name}.json"
        if not part_json.exists():
            doc["notes"].append(f"part {name} has no results (not run, or failed)")
            continue
        part = json.loads(part_json.read_text())
        pm = part.get("machine") or {}
        doc["parts"][name] = {"seconds": part.get("part_seconds"), "loadavg": part.get("part_loadavg"),
                              "started": part.get("started"),
                              "versions": {k: pm.get(k) for k in VERSION_KEYS if pm.get(k)}}
        merge(doc, part, name)
    starts = sorted(p["started"] for p in doc["parts"].values() if p.get("started"))
    doc["started"] = starts[0] if starts else None
    doc["duration_s"] = round(sum(p["seconds"] or 0 for p in doc["parts"].values()), 1)
    loads = [p["loadavg"] for p in doc["parts"].values() if p.get("loadavg")]
    doc["loadavg_start"] = loads[0][0] if loads else None
    doc["loadavg_end"] = loads[-1][1] if loads else None
    plot_path = out_dir / ("gpu.png" if gpu else "cpu.png")
    if report.plot(doc, plot_path):
        try:
            doc["plot"] = str(plot_path.relative_to(repo_root()))
        except ValueError:
            doc["plot"] = str(plot_path)
    doc["targets"] = report.targets(doc)
    report.write_json(doc, json_path)
    print(report.render_terminal(doc))
    if not gpu:
        md = Path(args.markdown or repo_root() / "BENCHMARKS.md")
        report.update_markdown(md, report.markdown_results(doc))
        say(f"wrote {json_path}, {plot_path} and {md}")
    else:
        say(f"wrote {json_path} and {plot_path}")
    return 0


