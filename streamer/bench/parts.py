"""The parts of the benchmark, each run by one `streamer bench` process: streamer in each mode with the
baselines (part_streamer), the speed work (part_speed), the window sweep (part_sweep) and the thread study
(part_threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.bench.cli import csv, say
from streamer.bench.corpus import repo_root
from streamer.bench.suite import BUSY_LOOP
from streamer.cli.args import config_from_args
from streamer.core.config import Config, ModelConfig
from streamer.errors import ConfigError, StreamerError

if TYPE_CHECKING:  # the parts import suite where they use it
    from streamer.bench.suite import Workload


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
    names = list(BASELINES) if spec == "all" else csv(spec)
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ConfigError(f"unknown baseline(s) {', '.join(bad)}", f"use all, none or {', '.join(BASELINES)}")
    return names


#: Unaware runs of the demo model with one model setting changed each (fidelity of the speed work).
VARIANTS: list[tuple[str, dict[str, Any]]] = [
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
    say(f"{key}: {len(work.session.placements)} clips, {work.session.duration_s:.0f} s stream, "
        f"{len(work.segments)} VAD segments; modes {','.join(args.modes)}")
    ctc = suite.load(key, config.model)
    suite.warm(ctc, config, work)
    pending = _streamer_runs(args, config, ctc, work, rt_work)
    idle = suite.idle_cpu(ctc, config, args.idle_s) if args.idle_s > 0 else None
    if getattr(args, "stall_s", 0) > 0:
        say(f"{key}: realtime run with a {args.stall_s:g} s stall ...")
        stall = suite.stall_catch_up(ctc, config, rt_work, args.stall_s)
        say(f"{key}: stall: {stall}")
        idle = {**(idle or {}), "stall": stall}
    workloads = list({id(w): w for _, w in pending}.values())
    same_precision = None
    if ctc.quantized or ctc.dtype != _float32():  # also compare with the offline decode at streamer's precision
        from streamer.model.reference import reference_text

        same_precision = {id(w): {p.clip.name: reference_text(ctc.model, ctc.processor, p.clip.audio)
                                  for p in w.session.placements} for w in workloads}
    del ctc
    import gc

    gc.collect()
    names = _baseline_names(args.baselines)
    offline_by_work: dict[int, dict] = {}
    baseline_rows: list[dict] = []
    for w in workloads:
        say(f"{key}: offline reference{' and baselines' if w is work and names else ''} ...")
        off, rows = suite.baseline_runs(key, w, names if w is work else [], device=config.model.device)
        offline_by_work[id(w)] = off
        for row in rows:
            row.update(model=key, clips=args.clips)
        if w is work:
            baseline_rows = rows
    results = [_with_fidelity(r, w, offline_by_work[id(w)], same_precision) for r, w in pending]
    return _summary(args, results, baseline_rows, idle)


def _streamer_runs(args, config: Config, ctc, work, rt_work) -> list[tuple[dict, Workload]]:
    """(result, workload) of each run of streamer: the modes asked for, the stitched-finals run, and the
    model variants."""
    from streamer.bench import suite

    key = args.model
    pending = []
    for mode in args.modes:
        w = rt_work if mode == "realtime" else work
        # the realtime run once per machine load asked for (--busy-cores): idle and busy side by side
        for busy in (busy_loads(args) if mode == "realtime" else [0]):
            say(f"{key}: {mode} run over {w.session.duration_s:.0f} s"
                f"{f' with {busy} busy core' + ('s' if busy > 1 else '') if busy else ''} ...")
            load0 = suite.loadavg()
            with suite.busy_cores(busy) as pids:
                r = suite.streamer_runs(ctc, config, w, [mode], None)[0]
            r.update(model=key, clips=args.realtime_clips if mode == "realtime" and args.realtime_clips else args.clips,
                     busy_cores=busy, busy_pids=pids, loadavg_start=load0, loadavg_end=suite.loadavg(),
                     threads=getattr(ctc, "threads_in_use", 0),
                     thread_choice=ctc.tuner.description if getattr(ctc, "tuner", None) else "-",
                     thread_changes=ctc.tuner.changes if getattr(ctc, "tuner", None) else 0)
            pending.append((r, w))
    if args.stitched and config.window.final_pass_max_s > 0:  # what the windows alone keep of the offline text
        scfg = replace(config, window=replace(config.window, final_pass_max_s=0.0))
        say(f"{key}: unaware run with stitched finals (no final pass) ...")
        r = suite.streamer_runs(ctc, scfg, work, ["unaware"], None)[0]
        r.update(model=key, clips=args.clips)
        pending.append((r, work))
    if args.variants:
        for name, kw in VARIANTS:
            vcfg = replace(config, model=replace(config.model, **kw))
            say(f"{key}: variant {name} ...")
            vctc = ctc if not kw else suite.load(key, vcfg.model)
            suite.warm(vctc, vcfg, work)
            r = suite.streamer_runs(vctc, vcfg, work, ["unaware"], None)[0]
            r.update(model=key, clips=args.clips, variant=name)
            pending.append((r, work))
            if vctc is not ctc:
                del vctc
    return pending


def busy_loads(args) -> list[int]:
    """The machine loads of the realtime run: idle, then each --busy-cores count (a comma list)."""
    asked = [int(x) for x in csv(str(getattr(args, "busy_cores", "0") or "0"))]
    if any(n < 0 for n in asked):
        raise ConfigError("--busy-cores takes counts of 0 or more", "e.g. --busy-cores 1, or 1,2")
    return sorted({0, *asked})


def _with_fidelity(r: dict, w, off: dict[str, str], same_precision: dict | None) -> dict:
    """A run's result with its fidelity to the offline decode (and to the decode at its own precision)."""
    from streamer.bench.metrics import fidelity

    names_w = [p.clip.name for p in w.session.placements]
    f = fidelity([off[n] for n in names_w], [r["_texts"][n] for n in names_w])
    r.update(fidelity_cer=f["cer"], fidelity_wer=f["wer"], identical_share=f["identical_share"], utterances=f["utterances"])
    r["_offline"] = off
    if same_precision is not None and not r.get("variant"):
        sp = same_precision[id(w)]
        f2 = fidelity([sp[n] for n in names_w], [r["_texts"][n] for n in names_w])
        r.update(fidelity_cer_same_precision=f2["cer"], identical_share_same_precision=f2["identical_share"])
    return r


def _summary(args, results: list[dict], baseline_rows: list[dict], idle: dict | None) -> dict:
    """The part's output, with ratios against streamer in real time (or the first mode run) on the same clips."""
    from streamer.bench import suite

    ref = next((r for r in results if r["mode"] == "realtime" and not r.get("variant") and r["clips"] == args.clips),
               next((r for r in results if not r.get("variant")), None))
    out: dict = {"results": results + baseline_rows}
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
        say(f"speed work on {key} ({len(variants)} variants) ...")
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
        say(f"sweep hop {w.hop_ms} / left {w.left_context_ms} / look-ahead {w.lookahead_ms} ...")
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
                        say(f"threads {threads}, OpenMP wait policy {policy}, busy core {'yes' if busy else 'no'} ...")
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
    config = config_from_args(args, args.model)
    out: dict = {"results": []}
    if args.threads_study:
        out.update(part_threads(args, config))
        return out
    if args.speed:
        out.update(part_speed(args, config))
    if args.sweep:
        out.update(part_sweep(args, config))
    if args.multi_utterance:
        from streamer.bench.multi_utterance import part_multi_utterance

        out.update(part_multi_utterance(args, config))
    if not args.speed and not args.sweep and not args.multi_utterance:
        out.update(part_streamer(args, config))
    return out


