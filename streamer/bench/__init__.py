"""`streamer bench`: latency, compute and fidelity of streamer and of the alternatives, in the same run, on
the same audio and model, at the default settings unless told otherwise.

    streamer bench                      # base-size model, default settings, a short clip set (~2 min)
    streamer bench --model demo --clips all --modes realtime,unaware
    streamer bench --full               # everything in BENCHMARKS.md (~20 min): JSON, plot, BENCHMARKS.md
    streamer bench --full --gpu         # the GPU experiments (benchmarks/gpu_bench.sh)

Definitions live in streamer/bench/metrics.py (latencies), runs.py (modes) and baselines.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import streamer.model  # noqa: F401  (first: sets torch's OpenMP wait policy before anything imports torch)
from streamer.config import Config, ModelConfig, WindowConfig
from streamer.errors import ConfigError, StreamerError

#: Model runs whose figures count for the headline: the base-size model at default settings, in real time.
HEADLINE_MODEL = "base"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(f"bad bench arguments: {message}", "see streamer bench --help")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    from streamer.bench.runs import MODES

    d = Config()
    p = _Parser(prog="streamer bench", description="Benchmark streamer against the alternatives (see BENCHMARKS.md).")
    p.add_argument("--model", default=HEADLINE_MODEL,
                   help="base | large (random-init, real configs) | demo | tiny | a model folder (default base)")
    p.add_argument("--clips", default="quick", help="all | real | synthetic | quick | sweep | smoke | name,name,... (default quick)")
    p.add_argument("--realtime-clips", default=None, help="clip set for the realtime run (default: --clips)")
    p.add_argument("--modes", type=_csv, default=["realtime", "unaware"], help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--baselines", default="all", help="all | none | comma list of offline, per_segment, hf_pipeline")
    p.add_argument("--idle-s", type=float, default=0.0, help="also measure idle CPU on this much room tone")
    p.add_argument("--variants", action="store_true", help="also run precision / reuse / normalisation variants (unaware)")
    p.add_argument("--stitched", action="store_true",
                   help="also an unaware run whose finals come from the stitched windows only (final pass off)")
    p.add_argument("--speed", type=_csv, default=[], metavar="MODELS", help="speed work on these models (one window at a time)")
    p.add_argument("--speed-s", type=float, default=6.0, help="seconds of speech the speed work steps through")
    p.add_argument("--speed-variants", type=_csv, default=None, help="only these speed variants (names as in the table)")
    p.add_argument("--threads-study", action="store_true",
                   help="int8 step time for 1 / 2 threads x OpenMP wait policy x a busy core beside it (one process each)")
    p.add_argument("--sweep", action="store_true", help="the hop / left context / look-ahead sweep")
    p.add_argument("--full", action="store_true", help="everything, each part in its own process; writes --out and BENCHMARKS.md")
    p.add_argument("--gpu", action="store_true", help="with --full: the GPU experiments instead of the CPU ones")
    p.add_argument("--parts", default=None, help="with --full: only these parts (comma list), then merge; none: only merge")
    p.add_argument("--out", default=None, help="results folder for --full (default benchmarks/results)")
    p.add_argument("--json", default=None, help="write the results here (default: streamer-bench.json, or OUT/cpu.json with --full)")
    p.add_argument("--markdown", default=None, help="with --full: the BENCHMARKS.md to update (default: the repository's)")
    p.add_argument("--render-synthetic", action="store_true", help="(re)render benchmarks/audio/synthetic with espeak-ng and exit")
    g = p.add_argument_group("settings (default: streamer's defaults)")
    g.add_argument("--device", default=d.model.device, choices=("auto", "cpu", "cuda"))
    g.add_argument("--dtype", default=d.model.dtype, choices=("auto", "float32", "float16", "bfloat16"))
    g.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=d.model.quantize)
    g.add_argument("--threads", type=int, default=d.model.threads)
    g.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=d.model.reuse_features)
    g.add_argument("--reuse-group-norm", action=argparse.BooleanOptionalAction, default=d.model.reuse_group_norm)
    g.add_argument("--hop-ms", type=int, default=d.window.hop_ms)
    g.add_argument("--left-context-ms", type=int, default=d.window.left_context_ms)
    g.add_argument("--lookahead-ms", type=int, default=d.window.lookahead_ms)
    g.add_argument("--final-pass-max-s", type=float, default=d.window.final_pass_max_s)
    p.add_argument("--debug", action="store_true")
    return p


def config_from(args) -> Config:
    d = Config()
    return Config(
        vad=d.vad, buffer=d.buffer,
        window=replace(d.window, hop_ms=args.hop_ms, left_context_ms=args.left_context_ms, lookahead_ms=args.lookahead_ms,
                       final_pass_max_s=args.final_pass_max_s),
        model=replace(d.model, device=args.device, dtype=args.dtype, quantize=args.quantize, threads=args.threads,
                      reuse_features=args.reuse, reuse_group_norm=args.reuse_group_norm),
    ).validate()


def _say(msg: str) -> None:
    print(f"streamer bench: {msg}", file=sys.stderr, flush=True)


def _demo_available() -> bool:
    from streamer.model import demo_model_path

    if os.environ.get("STREAMER_BENCH_DEMO"):
        return True
    try:
        demo_model_path()
        return True
    except StreamerError:
        return False


def _baseline_names(spec: str) -> list[str]:
    from streamer.bench.baselines import BASELINES

    if spec == "none":
        return []
    names = list(BASELINES) if spec == "all" else _csv(spec)
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ConfigError(f"unknown baseline(s) {', '.join(bad)}", f"use all, none or {', '.join(BASELINES)}")
    return names


#: Unaware runs of the demo model with one model setting changed each (fidelity of the speed work).
VARIANTS = [
    ("default", {}),
    ("float32, no reuse", dict(quantize=False, reuse_features=False)),
    ("int8", dict(quantize=True)),
    ("int8, no reuse", dict(quantize=True, reuse_features=False)),
    ("reuse, utterance stats", dict(norm_stats="utterance")),
    ("reuse, tolerance 0.25", dict(norm_tolerance=0.25)),
    ("reuse, frozen stats", dict(norm_tolerance=1e9)),
]


def _float32():
    import torch

    return torch.float32


def part_streamer(args, config: Config) -> dict:
    """streamer in each mode, the baselines and idle CPU for one model on one clip set."""
    from streamer.bench import suite

    key = args.model
    if key == "demo" and not _demo_available():
        return {"notes": ["demo model not present (assets/demo_model): its runs were skipped"]}
    work = suite.Workload.build(args.clips, config)
    rt_work = suite.Workload.build(args.realtime_clips, config) if args.realtime_clips else work
    _say(f"{key}: {len(work.session.placements)} clips, {work.session.duration_s:.0f} s stream, "
         f"{len(work.segments)} VAD segments; modes {','.join(args.modes)}")
    ctc = suite.load(key, config.model)
    suite.warm(ctc, config, work)
    results, idle = [], None
    pending = []
    for mode in args.modes:
        w = rt_work if mode == "realtime" else work
        _say(f"{key}: {mode} run over {w.session.duration_s:.0f} s ...")
        r = suite.streamer_runs(ctc, config, w, [mode], None)[0]
        r.update(model=key, clips=args.realtime_clips if mode == "realtime" and args.realtime_clips else args.clips)
        pending.append((r, w))
    if args.stitched and config.window.final_pass_max_s > 0:  # what the windows alone keep of the offline text
        scfg = replace(config, window=replace(config.window, final_pass_max_s=0.0))
        _say(f"{key}: unaware run with stitched finals (no final pass) ...")
        r = suite.streamer_runs(ctc, scfg, work, ["unaware"], None)[0]
        r.update(model=key, clips=args.clips)
        pending.append((r, work))
    if args.idle_s > 0:
        idle = suite.idle_cpu(ctc, config, args.idle_s)
    if args.variants:
        for name, kw in VARIANTS:
            vcfg = replace(config, model=replace(config.model, **kw))
            _say(f"{key}: variant {name} ...")
            vctc = ctc if not kw else suite.load(key, vcfg.model)
            suite.warm(vctc, vcfg, work)
            r = suite.streamer_runs(vctc, vcfg, work, ["unaware"], None)[0]
            r.update(model=key, clips=args.clips, variant=name)
            pending.append((r, work))
            if vctc is not ctc:
                del vctc
    same_precision = None
    if ctc.quantized or ctc.dtype != _float32():  # also compare with the offline decode at streamer's precision
        from streamer.bench.baselines import greedy_decode

        same_precision = {}
        for w in {id(w): w for _, w in pending}.values():
            same_precision[id(w)] = {p.clip.name: greedy_decode(ctc.model, ctc.processor, p.clip.audio)
                                     for p in w.session.placements}
    del ctc
    import gc

    gc.collect()
    names = _baseline_names(args.baselines)
    offline_by_work: dict[int, dict] = {}
    baseline_rows = []
    for w in {id(w): w for _, w in pending}.values():
        _say(f"{key}: offline reference{' and baselines' if w is work and names else ''} ...")
        off, rows = suite.baseline_runs(key, w, names if w is work else [], device=config.model.device)
        offline_by_work[id(w)] = off
        for row in rows:
            row.update(model=key, clips=args.clips)
        if w is work:
            baseline_rows = rows
    for r, w in pending:
        off = offline_by_work[id(w)]
        names_w = [p.clip.name for p in w.session.placements]
        from streamer.bench.metrics import fidelity

        f = fidelity([off[n] for n in names_w], [r["_texts"][n] for n in names_w])
        r.update(fidelity_cer=f["cer"], fidelity_wer=f["wer"], identical_share=f["identical_share"], utterances=f["utterances"])
        r["_offline"] = off
        if same_precision is not None and not r.get("variant"):
            sp = same_precision[id(w)]
            f2 = fidelity([sp[n] for n in names_w], [r["_texts"][n] for n in names_w])
            r.update(fidelity_cer_same_precision=f2["cer"], identical_share_same_precision=f2["identical_share"])
        results.append(r)
    # Ratios against streamer in real time (or the first mode run) on the same clips.
    ref = next((r for r in results if r["mode"] == "realtime" and not r.get("variant") and r["clips"] == args.clips),
               next((r for r in results if not r.get("variant")), None))
    out = {"results": results + baseline_rows}
    if ref is not None:
        ratios = suite.compare(ref, baseline_rows)
        for row in baseline_rows:
            row.update({k: v for k, v in ratios[row["system"]].items() if k.endswith("ratio") or "_ratio" in k},
                       compared_to_mode=ref["mode"])
        h = dict(ref)
        h["baselines"] = ratios
        if idle:
            h.update(idle)
        out["headline_candidate"] = h
    if idle:
        out["idle"] = idle
    return out


def part_speed(args, config: Config) -> dict:
    from streamer.bench import corpus, suite

    rows = []
    clip = corpus.select_clips("syn_long" if corpus.synthetic_clips() else "ls_dev-clean_2412-153948-0000")[0]
    audio = clip.audio[: int(args.speed_s * 16000)]
    for key in args.speed:
        if key == "demo" and not _demo_available():
            continue
        variants = suite.SPEED_VARIANTS
        if args.device == "cuda":
            from streamer.bench.gpu import GPU_SPEED_VARIANTS

            variants = GPU_SPEED_VARIANTS
        elif key == "large":  # keep the full run short: the large model only in the variants that matter
            variants = [v for v in variants if v[0] in ("fp32", "int8", "int8+reuse")]
        if args.speed_variants:
            variants = [v for v in variants if v[0] in args.speed_variants]
        _say(f"speed work on {key} ({len(variants)} variants) ...")
        rows += suite.speed_part(key, audio, config.window, variants, device=args.device, threads=config.model.threads)
        if args.device == "cuda":
            from streamer.bench import gpu

            rows += gpu.batching(key, config.window, audio)
            rows += gpu.fixed_shape(key, config.window, audio)
    return {"speed": rows}


def part_sweep(args, config: Config) -> dict:
    """Per window setting: algorithmic latency and fidelity on the demo model (computation-unaware, all
    clips), computation-aware latency and RTF on the base-size model (simulated, the quick set)."""
    from streamer.bench import suite

    fid_key = "demo" if _demo_available() else "tiny"
    grid = suite.sweep_windows(config.window)
    fid_work = suite.Workload.build("sweep" if fid_key == "demo" else "quick", config)
    cost_work = suite.Workload.build(args.clips if args.clips != "quick" else "quick", config)
    rows = []
    fid_ctc = suite.load(fid_key, config.model)
    suite.warm(fid_ctc, config, fid_work)
    plain = suite.load(fid_key, ModelConfig(device=config.model.device, dtype="float32", reuse_features=False))
    from streamer.bench import baselines as bl

    off = bl.run_baseline("offline", plain.model, plain.processor, fid_work.session, fid_work.segments, plain.geometry).texts
    del plain
    cost_ctc = suite.load(args.model, config.model)
    suite.warm(cost_ctc, config, cost_work)
    for w in grid:
        cfg = replace(config, window=w)
        _say(f"sweep hop {w.hop_ms} / left {w.left_context_ms} / look-ahead {w.lookahead_ms} ...")
        # fidelity of the windows themselves: with the final pass every setting would give the offline text
        a = suite.streamer_runs(fid_ctc, replace(cfg, window=replace(w, final_pass_max_s=0.0)), fid_work, ["unaware"], off)[0]
        c = suite.streamer_runs(cost_ctc, cfg, cost_work, [args.modes[0] if args.modes[0] != "unaware" else "simulated"], None)[0]
        row = {k: c[k] for k in ("hop_ms", "left_context_ms", "lookahead_ms", "mode", "partial_latency_p50_ms",
                                 "partial_latency_p95_ms", "commit_latency_p50_ms", "commit_latency_p95_ms",
                                 "final_latency_p50_ms", "rtf", "dropped_samples", "max_lag_s", "precision")}
        row.update(model=args.model, fidelity_model=fid_key, default_settings=(w == Config().window),
                   alg_partial_p50_ms=a["partial_latency_p50_ms"], alg_partial_p95_ms=a["partial_latency_p95_ms"],
                   alg_commit_p50_ms=a["commit_latency_p50_ms"], alg_final_p50_ms=a["final_latency_p50_ms"],
                   demo_fidelity_cer=a.get("fidelity_cer"), demo_fidelity_wer=a.get("fidelity_wer"),
                   demo_identical_share=a.get("identical_share"), demo_partial_instability=a.get("partial_instability"))
        rows.append(row)
    return {"sweep": rows}


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
FULL_GPU = [
    ("speed", ["--speed", "base,large", "--device", "cuda"]),
    ("headline", ["--model", "base", "--device", "cuda", "--clips", "quick", "--modes", "realtime,unaware",
                  "--baselines", "all", "--idle-s", "3"]),
    ("hop120", ["--model", "base", "--device", "cuda", "--clips", "quick", "--modes", "realtime", "--baselines", "none",
                "--hop-ms", "120"]),
    ("large", ["--model", "large", "--device", "cuda", "--clips", "quick", "--modes", "realtime", "--baselines",
               "offline,per_segment"]),
    ("demo", ["--model", "demo", "--device", "cuda", "--clips", "quick", "--modes", "realtime", "--baselines", "offline"]),
    ("sweep", ["--sweep", "--model", "base", "--device", "cuda", "--clips", "quick", "--modes", "simulated"]),
]


#: A busy loop standing in for whatever else runs on a desktop (one core's worth).
BUSY_LOOP = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"


def part_threads(args, config: Config) -> dict:
    """Thread settings: each combination in a fresh process, because OMP_WAIT_POLICY is read when torch's
    OpenMP runtime starts. 'busy core' runs a spinning process beside the measurement, as a desktop would."""
    rows = []
    env0 = dict(os.environ, PYTHONPATH=str(repo_root()) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import tempfile

    for busy in (False, True):
        for threads in (1, 2):
            for policy in ("default", "PASSIVE"):  # adjacent, so a change of machine load hits both alike
                env = dict(env0)
                env.pop("OMP_WAIT_POLICY", None)
                env["STREAMER_OMP_WAIT_POLICY"] = "" if policy == "default" else policy
                hog = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        out = Path(tmp) / "t.json"
                        cmd = [sys.executable, "-m", "streamer", "bench", "--speed", args.model, "--speed-variants",
                               "int8", "--threads", str(threads), "--speed-s", str(args.speed_s), "--json", str(out)]
                        _say(f"threads {threads}, OpenMP wait policy {policy}, busy core {'yes' if busy else 'no'} ...")
                        if subprocess.call(cmd, env=env, cwd=repo_root(), stdout=subprocess.DEVNULL) == 0:
                            r = json.loads(out.read_text())["speed"][0]
                            rows.append({"model": args.model, "variant": f"int8, {threads} thread{'s' if threads > 1 else ''}, "
                                         f"wait {policy.lower()}{', busy core' if busy else ''}", "threads": threads,
                                         "omp_wait_policy": policy, "busy_core": busy,
                                         **{k: r[k] for k in ("window_ms", "step_ms_p50", "step_ms_p90", "rtf_at_hop",
                                                              "conv_front_end_ms", "precision", "params_m", "torch_threads")}})
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
    return {"threads": rows}


def run_part(args) -> dict:
    config = config_from(args)
    out: dict = {"results": []}
    if args.threads_study:
        out.update(part_threads(args, config))
        return out
    if args.speed:
        out.update(part_speed(args, config))
    if args.sweep:
        out.update(part_sweep(args, config))
    if not args.speed and not args.sweep:
        out.update(part_streamer(args, config))
    return out


# software versions a part records in its own "machine" (parts merged from separate runs may differ)
VERSION_KEYS = ("python", "torch", "transformers", "numpy")


def merge(doc: dict, part: dict, name: str) -> None:
    doc["results"] += part.get("results", [])
    for key in ("speed", "sweep", "threads", "notes"):
        doc.setdefault(key, [])
        doc[key] += part.get(key, [])
    if part.get("idle"):
        doc["idle"] = part["idle"]
    h = part.get("headline_candidate")
    if h and name == "headline":
        doc["gpu_headline" if doc.get("gpu") else "headline"] = h
    elif part.get("gpu_headline") and name == "headline":
        doc["gpu_headline"] = part["gpu_headline"]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def full(args, argv: list[str]) -> int:
    """Run the parts of the CPU (or GPU) suite, each in its own process writing OUT/part-NAME.json, then
    merge every part file present into OUT/cpu.json (gpu.json), the plot and BENCHMARKS.md. A part that
    failed or timed out can be rerun alone with --parts NAME; --parts none only merges."""
    from streamer.bench import report
    from streamer.bench.suite import loadavg, machine

    gpu = args.gpu
    suite_parts = FULL_GPU if gpu else FULL_CPU
    wanted = [n for n, _ in suite_parts] if args.parts is None else [n for n in _csv(args.parts) if n != "none"]
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
        _say(f"part {name}: {' '.join(part_args)}")
        cmd = [sys.executable, "-m", "streamer", "bench", *part_args, "--json", str(part_json)]
        rc = subprocess.call(cmd, env=env, cwd=repo_root())
        if rc != 0:
            _say(f"part {name} failed (exit {rc})")
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
        _say(f"wrote {json_path}, {plot_path} and {md}")
    else:
        _say(f"wrote {json_path} and {plot_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render_synthetic:
        from streamer.bench.corpus import render_synthetic, synthetic_dir

        _say(f"rendered {render_synthetic(synthetic_dir())}")
        return 0
    if args.full:
        return full(args, argv)
    from streamer.bench import report
    from streamer.bench.suite import loadavg, machine

    started = time.time()
    doc = {"command": "streamer bench " + " ".join(argv), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "machine": machine(), "loadavg_start": loadavg(), "defaults": {
               **{k: getattr(Config().window, k) for k in ("hop_ms", "left_context_ms", "lookahead_ms")}},
           "results": [], "speed": [], "sweep": [], "threads": [], "notes": []}
    part = run_part(args)
    merge(doc, part, "headline" if args.model == HEADLINE_MODEL or args.device == "cuda" else args.model)
    if args.device == "cuda" and doc.get("headline"):
        doc["gpu_headline"] = doc.pop("headline")
    doc["loadavg_end"] = loadavg()
    doc["duration_s"] = round(time.time() - started, 1)
    if part.get("headline_candidate"):
        doc["headline_candidate"] = part["headline_candidate"]
    path = Path(args.json or "streamer-bench.json")
    report.write_json(doc, path)
    transcripts = {f"{r.get('model')}/{r.get('mode')}/{r.get('variant', '')}": {"streamed": r.get("_texts"), "offline": r.get("_offline")}
                   for r in doc["results"] if r.get("_texts")}
    if transcripts:
        path.with_name(path.stem + ".transcripts.json").write_text(json.dumps(transcripts, indent=1), encoding="utf-8")
    print(report.render_terminal(doc))
    _say(f"wrote {path}")
    return 0
