"""What one benchmark part measures: streamer runs in each mode, the baselines, idle CPU, the speed work
(precision / threads / feature reuse, one window at a time) and the window sweep."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from streamer.bench import baselines as bl
from streamer.bench.corpus import LONG_UTTERANCE_S, Session, build_session, select_clips, silence
from streamer.bench.metrics import SegmentTruth, fidelity, instability, percentile_ms, segment_timings, vad_segments
from streamer.bench.models import model_folder
from streamer.bench.runs import BLOCK_MS, RUNNERS, RunResult, block_samples, run_realtime
from streamer.core.config import MODEL_SAMPLE_RATE, Config, ModelConfig, WindowConfig
from streamer.core.events import VadEvent

#: A busy loop standing in for whatever else runs on a desktop (one core's worth); its starters kill it.
BUSY_LOOP = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"


def host() -> dict:
    """The CPU, its usable cores, the platform and Python (no torch import: the soak harness uses it too)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}


def machine() -> dict:
    import torch
    import transformers

    info = {
        **host(), "torch": torch.__version__,
        "transformers": transformers.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


@contextmanager
def busy_cores(n: int) -> Iterator[list[int]]:
    """n processes each spinning one core (what a browser or a build does beside streamer) for the duration;
    yields their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load(key: str, model: ModelConfig, warmup: bool = True):
    from streamer.model import load_model

    return load_model(replace(model, name=model_folder(key)), warmup=warmup)


def settings(config: Config, ctc=None) -> dict:
    w, m = config.window, config.model
    out = {"hop_ms": w.hop_ms, "left_context_ms": w.left_context_ms, "lookahead_ms": w.lookahead_ms,
           "final_pass_max_s": w.final_pass_max_s,
           "max_catch_up_hops": w.max_catch_up_hops, "quantize": m.quantize, "threads": m.threads,
           "dtype": m.dtype, "reuse_features": m.reuse_features, "reuse_group_norm": m.reuse_group_norm,
           "norm_stats": m.norm_stats, "norm_tolerance": m.norm_tolerance, "device": m.device}
    if ctc is not None:
        out.update(device=ctc.device, reuse_mode=ctc.reuse_mode, params_m=round(ctc.parameters / 1e6, 1),
                   precision=("int8+bf16c" if ctc.conv_bfloat16 else "int8") if ctc.quantized
                   else str(ctc.dtype).replace("torch.", ""))
    return out


def is_default(config: Config) -> bool:
    d = Config()
    return config.window == d.window and replace(config.model, name=d.model.name) == d.model and config.vad == d.vad


@dataclass
class Workload:
    """The audio of one part: the session, its clips, and the VAD segments the recognizer will see."""

    session: Session
    segments: list[SegmentTruth]

    @classmethod
    def build(cls, clip_set: str, config: Config) -> Workload:
        session = build_session(select_clips(clip_set))
        return cls(session, vad_segments(session.audio, config.vad, block_samples(BLOCK_MS)))

    def clip_of_segment(self, seg: SegmentTruth) -> str:
        p = self.session.placement_at((seg.start_sample + seg.end_sample) // 2)
        return p.clip.name if p else ""

    def clip_of(self) -> dict[str, str]:
        """Baseline job key -> clip name."""
        out = {p.clip.name: p.clip.name for p in self.session.placements}
        out.update({f"seg{s.index}": self.clip_of_segment(s) for s in self.segments})
        return out

    @property
    def references(self) -> dict[str, str]:
        return {p.clip.name: p.clip.reference for p in self.session.placements}


def summarize_run(run: RunResult, work: Workload, ctc, config: Config, offline: dict[str, str] | None) -> dict:
    g = ctc.geometry
    timings = segment_timings(run.events, work.segments, g)
    # per segment: latency of each frame (partial / commit: speech frames; *_all: every frame)
    partial_s: list[np.ndarray] = []
    commit_s: list[np.ndarray] = []
    long_partial_s: list[np.ndarray] = []
    partial_all_s: list[np.ndarray] = []
    commit_all_s: list[np.ndarray] = []
    final = []
    for t in timings:
        arrival = run.arrival(t.frames * g.stride_samples + g.receptive_field_samples)
        speech = t.segment.speech_mask(t.frames, g)
        partial_s.append((t.shown_s - arrival)[speech])
        commit_s.append((t.committed_s - arrival)[speech])
        partial_all_s.append(t.shown_s - arrival)
        commit_all_s.append(t.committed_s - arrival)
        if t.segment.duration_s > LONG_UTTERANCE_S:
            long_partial_s.append((t.shown_s - arrival)[speech])
        if t.final_s is not None:
            final.append(t.final_s - run.arrival(t.segment.speech_end_sample))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    partial, commit, long_partial = cat(partial_s), cat(commit_s), cat(long_partial_s)
    partial_all, commit_all = cat(partial_all_s), cat(commit_all_s)
    missing = int(np.isnan(partial_all).sum())
    shown, changed = instability(run.events)
    texts: dict[str, list[str]] = {}
    for t in timings:
        texts.setdefault(work.clip_of_segment(t.segment), []).append(t.text)
    names = [p.clip.name for p in work.session.placements]
    streamed = {n: " ".join(x for x in texts.get(n, []) if x) for n in names}
    out = {
        "system": "streamer", "mode": run.mode, **settings(config, ctc),
        "default_settings": is_default(config),
        "audio_s": round(run.audio_s, 2), "wall_s": round(run.wall_s, 2),
        "segments": len(work.segments),
        # the recognizer's own VAD saw the same segments (it does unless audio was dropped); counted by their
        # VAD ends: an utterance without text gives no final
        "segments_match": len({e.segment_id for e in run.events
                               if isinstance(e, VadEvent) and not e.speech}) == len(work.segments),
        "partial_latency_p50_ms": percentile_ms(partial[~np.isnan(partial)], 50),
        "partial_latency_p95_ms": percentile_ms(partial[~np.isnan(partial)], 95),
        "partial_latency_long_p50_ms": percentile_ms(long_partial[~np.isnan(long_partial)], 50),
        "commit_latency_p50_ms": percentile_ms(commit[~np.isnan(commit)], 50),
        "commit_latency_p95_ms": percentile_ms(commit[~np.isnan(commit)], 95),
        "final_latency_p50_ms": percentile_ms(final, 50),
        "final_latency_p95_ms": percentile_ms(final, 95),
        "partial_latency_p95_ms_all_frames": percentile_ms(partial_all[~np.isnan(partial_all)], 95),
        "commit_latency_p95_ms_all_frames": percentile_ms(commit_all[~np.isnan(commit_all)], 95),
        "frames_measured": int(len(partial)), "frames_never_shown": missing,
        "rtf": round(run.compute_s / run.audio_s, 4),
        "compute_s": round(run.compute_s, 3),
        "step_compute_ms_mean": round(run.compute_s / run.windows * 1000, 1) if run.windows else None,
        "windows": run.windows,
        "cpu_s_per_audio_s": round(run.cpu_s / run.audio_s, 4),
        "tentative_words": shown,
        "partial_instability": round(changed / shown, 4) if shown else None,
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "dropped_samples": run.dropped_samples,
        "max_lag_s": round(run.max_lag_s, 3),
        "reused_frame_share": round(ctc.counters.reused_share, 4) if ctc.reuse_mode != "off" else 0.0,
        "norm_restarts": ctc.counters.restarts,
        **run.extra,
    }
    if offline is not None:
        f = fidelity([offline[n] for n in names], [streamed[n] for n in names])
        out.update(fidelity_cer=f["cer"], fidelity_wer=f["wer"], identical_share=f["identical_share"],
                   utterances=f["utterances"])
    refs = work.references
    r = fidelity([refs[n] for n in names if refs[n]], [streamed[n] for n in names if refs[n]])
    out.update(reference_cer=r["cer"], reference_wer=r["wer"])
    out["_texts"] = streamed
    return out


def streamer_runs(ctc, config: Config, work: Workload, modes, offline) -> list[dict]:
    from streamer.core.recognizer import Recognizer  # noqa: F401 (import cost outside the timed runs)

    results = []
    from streamer.model.reuse import ReuseCounters

    for mode in modes:
        ctc.counters = ReuseCounters()
        gc.collect()
        run = RUNNERS[mode](ctc, config, work.session.audio)
        results.append(summarize_run(run, work, ctc, config, offline))
    return results


def warm(ctc, config: Config, work: Workload) -> None:
    """One utterance through the recognizer first, so one-time kernel set-up is not billed to the run."""
    if work.session.placements:
        p = work.session.placements[0]
        RUNNERS["unaware"](ctc, config, work.session.audio[: p.end_sample + MODEL_SAMPLE_RATE])


def idle_cpu(ctc, config: Config, seconds: float) -> dict:
    """CPU used by the realtime pipeline while the input is room tone (no speech: the model never runs)."""
    run = run_realtime(ctc, config, silence(seconds))
    return {"idle_cpu_percent": round(100 * run.cpu_s / run.wall_s, 2), "idle_s": round(run.wall_s, 2),
            "idle_windows": run.windows}


def baseline_runs(key: str, work: Workload, names, device: str = "cpu") -> tuple[dict[str, str], list[dict]]:
    """Load the model as the alternatives use it (float32, no quantisation, no reuse) and run each.
    Returns the offline texts by clip (the fidelity reference) and one summary per baseline."""
    plain = load(key, ModelConfig(device=device, dtype="float32", reuse_features=False), warmup=True)
    g = plain.geometry
    offline_texts: dict[str, str] = {}
    out = []
    order = ["offline"] + [n for n in names if n != "offline"]
    for name in order:
        res = bl.run_baseline(name, plain.model, plain.processor, work.session, work.segments, g)
        if name == "offline":
            offline_texts = dict(res.texts)
        if name in names:
            s = res.summary(work.session.duration_s, offline_texts, work.clip_of())
            s["precision"] = str(plain.dtype).replace("torch.", "")
            refs = work.references
            clip_texts: dict[str, list[str]] = {}
            for k, t in res.texts.items():
                clip_texts.setdefault(work.clip_of()[k], []).append(t)
            ns = [n for n in refs if refs[n]]
            r = fidelity([refs[n] for n in ns], [" ".join(x for x in clip_texts.get(n, []) if x) for n in ns])
            s.update(reference_cer=r["cer"], reference_wer=r["wer"])
            out.append(s)
    del plain
    gc.collect()
    return offline_texts, out


def compare(streamer: dict, baselines: list[dict]) -> dict:
    """Each baseline's latency and compute relative to streamer's (how many times slower to show text)."""
    out = {}
    for b in baselines:
        d = {k: b.get(k) for k in ("latency_p50_ms", "latency_p95_ms", "latency_long_p50_ms", "rtf", "fidelity_cer",
                                   "identical_share", "precision")}
        if streamer.get("partial_latency_p50_ms") and b.get("latency_p50_ms"):
            d["latency_ratio"] = round(b["latency_p50_ms"] / streamer["partial_latency_p50_ms"], 2)
        if streamer.get("partial_latency_long_p50_ms") and b.get("latency_long_p50_ms"):
            d["latency_ratio_long"] = round(b["latency_long_p50_ms"] / streamer["partial_latency_long_p50_ms"], 2)
        if streamer.get("rtf") and b.get("rtf"):
            d["compute_ratio"] = round(b["rtf"] / streamer["rtf"], 2)
        out[b["system"]] = d
    return out


# -- speed work: one window at a time -----------------------------------------------------------------------
def schedule_windows(geometry, window: WindowConfig, audio: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The windows a Recognizer runs over one utterance of `audio` (one hop per step)."""
    from streamer.core.windowing import WindowSchedule

    sched = WindowSchedule(geometry, window)
    out, committed = [], 0
    for available in range(geometry.stride_samples, len(audio) + 1, geometry.stride_samples):
        while (w := sched.next_window(0, committed, available, final=False)) is not None:
            out.append((w.start_sample, audio[w.start_sample:w.end_sample]))
            committed = w.commit_end_frame
    return out


SPEED_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", dict(quantize=False, reuse_features=False)),
    ("fp32+reuse", dict(quantize=False, reuse_features=True, reuse_group_norm=True)),
    ("int8", dict(quantize=True, reuse_features=False)),
    ("int8+reuse", dict(quantize=True, reuse_features=True, reuse_group_norm=True)),
    ("bf16", dict(quantize=False, reuse_features=False, dtype="bfloat16")),
]


def speed_part(key: str, clip_audio: np.ndarray, window: WindowConfig, variants=SPEED_VARIANTS,
               device: str = "cpu", repeats: int = 1, threads: int = 0) -> list[dict]:
    """Per variant: median compute per step over the steady-state windows of one utterance, the conv front
    end's share, RTF at the hop, and how far the logits move from the float32 full-window reference."""
    import torch

    default_threads = threads or torch.get_num_threads()
    ref_logits = None
    out = []
    for name, kw in variants:
        if device == "cuda" and kw.get("quantize"):
            continue
        kw = {"threads": default_threads, **kw}
        torch.set_num_threads(kw["threads"])
        ctc = load(key, replace(ModelConfig(device=device), **kw))
        windows = schedule_windows(ctc.geometry, window, clip_audio)
        steady = [w for w in windows if len(w[1]) == max(len(x[1]) for x in windows)]
        times, logits, feat_err = [], [], []
        enc = ctc.model.base_model.feature_extractor
        inner = getattr(enc, "inner", enc)
        for rep in range(repeats):
            ctc.reset()
            for start, audio in windows:
                t0 = time.perf_counter()
                lg = ctc.logits(audio, start)
                if device == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                if len(audio) == len(steady[0][1]):
                    times.append(dt)
                logits.append(lg)
                if rep == 0 and ctc.reuse_mode != "off" and ctc.counters.frames_reused:
                    # conv features as reused vs computed afresh on this window (same statistics): exact for
                    # layer-norm encoders, not for group-norm ones (outside the timing)
                    got = ctc._utterance.features.float()
                    x = torch.from_numpy(ctc.normalize(audio, ctc.last_stats))[None].to(ctc.device, ctc.dtype)
                    with torch.inference_mode():
                        want = inner(x).float()
                    feat_err.append(float((got - want).norm() / (want.norm() + 1e-12)))
        logits = logits[: len(windows)]
        row = {"model": key, "variant": name, **settings(Config(window=window, model=replace(ModelConfig(), **kw)), ctc),
               "torch_threads": torch.get_num_threads(),
               "window_ms": round(len(steady[0][1]) / 16, 1), "steps": len(times),
               "step_ms_p50": round(float(np.median(times)) * 1000, 1),
               "step_ms_p90": round(float(np.percentile(times, 90)) * 1000, 1)}
        row["rtf_at_hop"] = round(row["step_ms_p50"] / window.hop_ms, 3)
        if feat_err:
            row["reused_feature_rel_err_max"] = float(f"{max(feat_err):.3g}")
            row["reused_feature_rel_err_mean"] = float(f"{float(np.mean(feat_err)):.3g}")
        # conv front end alone on one steady window (not quantised by dynamic quantisation)
        x = torch.from_numpy(ctc.normalize(steady[-1][1]))[None].to(ctc.device, ctc.dtype)
        with torch.inference_mode():
            inner(x)
            fe = []
            for _ in range(5):
                t0 = time.perf_counter()
                inner(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                fe.append(time.perf_counter() - t0)
        row["conv_front_end_ms"] = round(float(np.median(fe)) * 1000, 1)
        row["reused_frame_share"] = round(ctc.counters.reused_share, 3)
        if ref_logits is None:
            ref_logits = logits
        else:
            dev = [float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits)]
            agree = [float((a.argmax(-1) == b.argmax(-1)).mean()) for a, b in zip(logits, ref_logits)]
            row["max_abs_logit_diff_vs_fp32"] = round(max(dev), 4)
            row["argmax_agreement_vs_fp32"] = round(float(np.mean(agree)), 5)
        out.append(row)
        del ctc
        gc.collect()
    torch.set_num_threads(default_threads)
    return out


# -- the window sweep ----------------------------------------------------------------------------------------
def sweep_windows(default: WindowConfig) -> list[WindowConfig]:
    """One knob at a time around the defaults, plus the hop/context pairs a GPU or a slower CPU would use."""
    d = default
    grid = [d]
    grid += [replace(d, hop_ms=h) for h in (120, 160, 240, 320, 480) if h != d.hop_ms]
    grid += [replace(d, left_context_ms=lc) for lc in (500, 1000, 1500) if lc != d.left_context_ms]
    grid += [replace(d, lookahead_ms=r) for r in (0, 160, 320, 480, 640) if r != d.lookahead_ms]
    grid += [replace(d, hop_ms=160, left_context_ms=lc, lookahead_ms=320) for lc in (500, 750)]
    seen, out = set(), []
    for w in grid:
        k = (w.hop_ms, w.left_context_ms, w.lookahead_ms)
        if k not in seen:
            seen.add(k)
            out.append(w)
    return out


# -- catch-up after a stall ------------------------------------------------------------------------------------
class _Stalling:
    """A model that stalls once for `stall_s` (as a process descheduled, swapped out or stopped would) at its
    first window after `at_s` of audio; everything else is the wrapped model."""

    def __init__(self, model, stall_s: float, at_s: float) -> None:
        self._model = model
        self._stall_s = stall_s
        self._at_sample = int(at_s * MODEL_SAMPLE_RATE)
        self.stalled_at: float | None = None  # perf_counter when the stall ended

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def logits(self, audio, start_sample=None):
        if self.stalled_at is None and start_sample is not None and start_sample >= self._at_sample:
            time.sleep(self._stall_s)
            self.stalled_at = time.perf_counter()
        return self._model.logits(audio, start_sample)


def stall_catch_up(ctc, config: Config, work: Workload, stall_s: float = 5.0) -> dict:
    """The realtime pipeline with one stall of `stall_s` in the middle of the stream: how long after it the
    worker is back within one hop of real time (lag from the StatsEvents), the partials skipped and the audio
    dropped meanwhile (none: the ring holds 30 s), and whether every utterance still got its final."""
    from streamer.core.events import FinalEvent, StatsEvent

    audio = work.session.audio
    model = _Stalling(ctc, stall_s, at_s=len(audio) / MODEL_SAMPLE_RATE / 3)
    run = run_realtime(model, config, audio)
    hop_s = config.window.hop_ms / 1000
    stats = [e for e in run.events if isinstance(e, StatsEvent)]
    end = model.stalled_at
    back = next((e.wall_time_s for e in stats if end is not None and e.wall_time_s >= end and e.lag_s <= hop_s), None)
    finals = len({e.segment_id for e in run.events if isinstance(e, FinalEvent)})
    return {"stall_s": stall_s, "catch_up_s": None if back is None or end is None else round(back - end, 2),
            "max_lag_s": round(run.max_lag_s, 2), "skipped_partials": run.extra.get("skipped_partials"),
            "dropped_samples": run.dropped_samples, "finals": finals, "segments": len(work.segments),
            "hop_ms_end": run.extra.get("hop_ms_end")}
