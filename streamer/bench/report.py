"""Terminal tables, the JSON file, the plot and the generated part of BENCHMARKS.md."""

from __future__ import annotations

import json
from pathlib import Path

#: The issue's targets for the base-size model at default settings on the 2-core CPU.
CPU_TARGETS = [
    ("partial_latency_p50_ms", "<=", 300.0),
    ("partial_latency_p95_ms", "<=", 600.0),
    ("commit_latency_p50_ms", "<=", 700.0),
    ("rtf", "<=", 0.5),
    ("dropped_samples", "<=", 0),
]
DEMO_FIDELITY_TARGET = ("fidelity_cer", "<=", 0.01)
GPU_PARTIAL_P50_TARGET_MS = 120.0
LONG_RATIO_TARGET = 5.0


def _fmt(v, nd=None) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if nd is not None:
            return f"{v:.{nd}f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict], columns: list[tuple[str, str]], markdown: bool = False) -> str:
    head = [h for _, h in columns]
    body = [[_fmt(r.get(k)) if not callable(k) else k(r) for k, _ in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def _pct(key):
    return lambda r: "-" if r.get(key) is None else f"{100 * r[key]:.2f}%"


def _final_pass(r) -> str:
    v = r.get("final_pass_max_s")
    return "-" if v is None else "off" if not v else f"<= {v:g} s"


def _cfg(r) -> str:
    return f"{r.get('hop_ms')}/{r.get('left_context_ms')}/{r.get('lookahead_ms')}"


STREAMER_COLUMNS = [
    ("model", "model"), ("mode", "mode"), ("clips", "clips"), (_cfg, "hop/left/look ms"), (_final_pass, "final pass"),
    ("precision", "prec"), ("partial_latency_p50_ms", "partial p50"), ("partial_latency_p95_ms", "p95"),
    ("commit_latency_p50_ms", "commit p50"), ("commit_latency_p95_ms", "p95"),
    ("final_latency_p50_ms", "final p50"), ("rtf", "RTF"), ("cpu_s_per_audio_s", "CPU s/s"),
    (_pct("fidelity_cer"), "CER vs offline"), (_pct("identical_share"), "identical"),
    (_pct("partial_instability"), "unstable"), ("peak_rss_mb", "RSS MB"), ("dropped_samples", "dropped"),
    ("busy_cores", "busy cores"), (lambda r: _fmt((r.get("loadavg_start") or [None])[0]), "load"),
    ("threads", "threads"), ("skipped_partials", "skipped"),
]
BASELINE_COLUMNS = [
    ("model", "model"), ("system", "system"), ("clips", "clips"), ("precision", "prec"),
    ("latency_p50_ms", "latency p50"),
    ("latency_p95_ms", "p95"), ("latency_long_p50_ms", "p50 >3 s"), ("latency_ratio", "x streamer"),
    ("latency_ratio_long", "x (>3 s)"), ("rtf", "RTF"), ("compute_ratio", "compute x"),
    (_pct("fidelity_cer"), "CER vs offline"),
]
SPEED_COLUMNS = [
    ("model", "model"), ("variant", "variant"), ("reuse_mode", "reuse"), ("window_ms", "window ms"),
    ("step_ms_p50", "step ms p50"), ("step_ms_p90", "p90"), ("conv_front_end_ms", "conv ms"),
    ("rtf_at_hop", "RTF"), ("reused_frame_share", "reused"), ("argmax_agreement_vs_fp32", "argmax = fp32"),
    ("max_abs_logit_diff_vs_fp32", "max abs dlogit"), ("reused_feature_rel_err_max", "reuse feat. err"),
]
BATCH_COLUMNS = [("model", "model"), ("dtype", "dtype"), ("batch", "batch"), ("window_ms", "window ms"),
                 ("ms_per_forward", "ms / forward"), ("ms_per_window", "ms / window")]
SHAPE_COLUMNS = [("model", "model"), ("variant", "windows"), ("dtype", "dtype"), ("windows", "count"),
                 ("shapes", "shapes"), ("ms_p50", "ms p50"), ("ms_p95", "ms p95")]


def _speed_tables(doc: dict, markdown: bool) -> list[str]:
    rows = doc.get("speed") or []
    out = []
    plain = [r for r in rows if not r.get("experiment")]
    if plain:
        out += ["### Speed work, one window at a time" if markdown else "speed work (one window at a time)", "" if markdown else None,
                table(plain, SPEED_COLUMNS, markdown), ""]
    for kind, title, cols in (("batching", "Batching windows (GPU)", BATCH_COLUMNS),
                              ("shapes", "Fixed vs variable window shapes (GPU)", SHAPE_COLUMNS)):
        sel = [r for r in rows if r.get("experiment") == kind]
        if sel:
            out += [f"### {title}" if markdown else title.lower(), "" if markdown else None, table(sel, cols, markdown), ""]
    return [x for x in out if x is not None]


THREAD_COLUMNS = [
    ("model", "model"), ("threads", "threads"), ("omp_wait_policy", "OpenMP wait"), ("busy_core", "busy core"),
    ("step_ms_p50", "step ms p50"), ("step_ms_p90", "p90"), ("rtf_at_hop", "RTF"),
]
SWEEP_COLUMNS = [
    (_cfg, "hop/left/look ms"), ("alg_partial_p50_ms", "alg. partial p50"), ("alg_commit_p50_ms", "alg. commit p50"),
    ("partial_latency_p50_ms", "partial p50"), ("partial_latency_p95_ms", "p95"), ("commit_latency_p50_ms", "commit p50"),
    ("rtf", "RTF base"), ("dropped_samples", "dropped"), (_pct("demo_fidelity_cer"), "demo CER (stitched)"),
    (_pct("demo_identical_share"), "identical"), (_pct("demo_partial_instability"), "unstable"),
]
VARIANT_COLUMNS = [
    ("model", "model"), ("variant", "variant"), ("precision", "prec"), ("reuse_mode", "reuse"),
    ("norm_stats", "stats"), ("norm_tolerance", "tol"), ("rtf", "RTF"), ("reused_frame_share", "reused"),
    (_pct("fidelity_cer"), "CER vs offline"), (_pct("fidelity_wer"), "WER"), (_pct("identical_share"), "identical"),
    (_pct("reference_wer"), "WER vs truth"),
]


def check(value, op: str, limit) -> bool | None:
    if value is None:
        return None
    return value <= limit if op == "<=" else value >= limit


def targets(doc: dict) -> list[dict]:
    out = []
    h = doc.get("headline") or {}
    for key, op, limit in CPU_TARGETS:
        out.append({"target": f"base {key} {op} {limit}", "value": h.get(key), "met": check(h.get(key), op, limit)})
    demo_rows = [r for r in doc.get("results", []) if r.get("model") == "demo" and r.get("system") == "streamer"
                 and r.get("default_settings") and not r.get("variant")]
    # Synthetic speech first: on real voices the demo model's text is mostly noise (CER against the truth
    # ~70 %), so agreement there says little about stitching; that row is reported in the tables as well.
    demo = max(demo_rows, key=lambda r: (r.get("clips") == "synthetic", r.get("mode") == "realtime",
                                         r.get("utterances") or 0), default=None)
    if demo is not None:
        k, op, limit = DEMO_FIDELITY_TARGET
        out.append({"target": f"demo {k} {op} {limit} ({demo.get('mode')}, {demo.get('clips')} clips, "
                              f"{demo.get('utterances')} utterances)",
                    "value": demo.get(k), "met": check(demo.get(k), op, limit)})
    seg = (h.get("baselines") or {}).get("per_segment") or {}
    ratio = seg.get("latency_ratio_long")
    out.append({"target": f"per-segment / streamer latency on utterances > 3 s >= {LONG_RATIO_TARGET}",
                "value": ratio, "met": check(ratio, ">=", LONG_RATIO_TARGET)})
    gpu = doc.get("gpu_headline")
    if gpu:
        v = gpu.get("partial_latency_p50_ms")
        out.append({"target": f"GPU partial_latency_p50_ms <= {GPU_PARTIAL_P50_TARGET_MS}", "value": v,
                    "met": check(v, "<=", GPU_PARTIAL_P50_TARGET_MS)})
    return out


def render_terminal(doc: dict) -> str:
    parts = []
    streamer_rows = [r for r in doc.get("results", []) if r.get("system") == "streamer" and not r.get("variant")]
    if streamer_rows:
        parts += ["streamer", table(streamer_rows, STREAMER_COLUMNS)]
    base_rows = [r for r in doc.get("results", []) if r.get("system") in ("offline", "per_segment", "hf_pipeline")]
    if base_rows:
        parts += ["", "baselines (same audio, same model, float32 as they are used)", table(base_rows, BASELINE_COLUMNS)]
    variants = [r for r in doc.get("results", []) if r.get("variant")]
    if variants:
        parts += ["", "model variants (computation-unaware runs)", table(variants, VARIANT_COLUMNS)]
    if doc.get("idle"):
        parts += ["", "idle: " + ", ".join(f"{k}={v}" for k, v in doc["idle"].items())]
    if doc.get("speed"):
        parts += [""] + _speed_tables(doc, markdown=False)
    if doc.get("threads"):
        parts += ["", "thread settings (int8, one window at a time, each in a fresh process)", table(doc["threads"], THREAD_COLUMNS)]
    if doc.get("sweep"):
        parts += ["", "window sweep", table(doc["sweep"], SWEEP_COLUMNS)]
    if doc.get("multi_utterance"):
        from streamer.bench.multi_utterance import render

        parts += ["", "multi-utterance recordings: streamed finals vs the whole-recording offline decode",
                  render(doc["multi_utterance"])]
    if doc.get("multi_utterance_study"):
        from streamer.bench.multi_utterance import render_study

        parts += ["", "multi-utterance context study: each utterance decoded alone", render_study(doc["multi_utterance_study"])]
    t = targets(doc) if doc.get("headline") else []
    if t:
        parts += ["", "targets"] + [f"  [{'met' if x['met'] else 'MISSED' if x['met'] is False else 'n/a'}] "
                                    f"{x['target']}: {_fmt(x['value'])}" for x in t]
    return "\n".join(parts)


def public(doc):
    """The document without private keys (those starting with '_')."""
    if isinstance(doc, dict):
        return {k: public(v) for k, v in doc.items() if not k.startswith("_")}
    if isinstance(doc, list):
        return [public(v) for v in doc]
    return doc


def write_json(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(public(doc), indent=1, sort_keys=False) + "\n", encoding="utf-8")


def plot(doc: dict, path: Path) -> Path | None:
    """Left: latency vs look-ahead (sweep rows with the default hop and context). Right: RTF vs model size,
    float32 and int8, from the speed work."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = doc.get("sweep") or []
    speed = doc.get("speed") or []
    if not sweep and not speed:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    d = doc.get("defaults", {})
    rows = sorted([r for r in sweep if r.get("hop_ms") == d.get("hop_ms") and r.get("left_context_ms") == d.get("left_context_ms")],
                  key=lambda r: r["lookahead_ms"])
    if rows:
        x = [r["lookahead_ms"] for r in rows]
        for key, label, style in (("partial_latency_p50_ms", "partial p50", "o-"), ("commit_latency_p50_ms", "commit p50", "s-"),
                                  ("partial_latency_p95_ms", "partial p95", "o--")):
            a.plot(x, [r.get(key) for r in rows], style, label=label)
        a.set_xlabel("look-ahead (ms)")
        a.set_ylabel("latency (ms), base model, computation-aware")
        a2 = a.twinx()
        a2.plot(x, [100 * (r.get("demo_fidelity_cer") or 0) for r in rows], "^:", color="gray", label="demo CER vs offline")
        a2.set_ylabel("CER vs offline decode (%)")
        a.legend(loc="upper left", fontsize=8)
        a2.legend(loc="upper right", fontsize=8)
        a.set_title(f"latency vs look-ahead (hop {d.get('hop_ms')} ms, context {d.get('left_context_ms')} ms)")
    for variant, style in (("fp32", "o-"), ("int8", "s-"), ("int8+reuse", "^-")):
        pts = sorted([(r["params_m"], r["rtf_at_hop"]) for r in speed
                      if r.get("variant") == variant and r.get("params_m") and not r.get("experiment")])
        if pts:
            b.plot([p[0] for p in pts], [p[1] for p in pts], style, label=variant)
    b.axhline(1.0, color="red", lw=0.8, ls=":")
    b.axhline(0.5, color="orange", lw=0.8, ls=":")
    b.set_xscale("log")
    b.set_xlabel("parameters (millions)")
    b.set_ylabel("RTF of one step at the default hop")
    b.set_title(f"RTF vs model size ({doc.get('machine', {}).get('cores', '?')}-core CPU)")
    b.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _version(doc: dict, key: str) -> str:
    """A package's version for the Machine line: the one every part ran with, or, when the parts were run
    separately with different versions, each version with the parts that used it (parts merged from files
    written before parts recorded their versions fall back to the merging machine's)."""
    fallback = (doc.get("machine") or {}).get(key)
    by_version: dict = {}
    for name, p in (doc.get("parts") or {}).items():
        by_version.setdefault((p.get("versions") or {}).get(key, fallback), []).append(name)
    if len(by_version) <= 1:
        return str(next(iter(by_version), fallback))
    return " / ".join(f"{v} ({', '.join(names)})" for v, names in by_version.items())


BEGIN, END = "<!-- generated:begin (streamer bench --full rewrites this part) -->", "<!-- generated:end -->"


def markdown_results(doc: dict) -> str:
    m = doc.get("machine", {})
    lines = [f"Generated by `{doc.get('command', 'streamer bench --full')}` on {doc.get('started', '?')} "
             f"({doc.get('duration_s', '?')} s).", "",
             f"Machine: {m.get('cpu')} ({m.get('cores')} cores, {m.get('memory_gb')} GB), {m.get('platform')}; "
             f"Python {_version(doc, 'python')}, torch {_version(doc, 'torch')}, "
             f"transformers {_version(doc, 'transformers')}, "
             f"torch threads {m.get('torch_threads')}. Load average at start / end: {doc.get('loadavg_start')} / "
             f"{doc.get('loadavg_end')}.", ""]
    parts = doc.get("parts") or {}
    if len({(p.get("started") or "")[:13] for p in parts.values()}) > 1:  # merged from separate runs
        lines[-1:-1] = ["Parts (each rerun alone with `--parts NAME`): " + "; ".join(
            f"{name} {p.get('started', '?')} ({p.get('seconds', '?')} s, load {(p.get('loadavg') or [[None]])[0][0]})"
            for name, p in parts.items()) + "."]
    t = targets(doc) if doc.get("headline") else []
    if t:
        lines += ["### Targets", ""] + [f"- {'met' if x['met'] else '**missed**' if x['met'] is False else 'n/a'}: "
                                        f"{x['target']} (measured {_fmt(x['value'])})" for x in t] + [""]
    rows = [r for r in doc.get("results", []) if r.get("system") == "streamer" and not r.get("variant")]
    if rows:
        lines += ["### streamer", "", table(rows, STREAMER_COLUMNS, markdown=True), ""]
    base_rows = [r for r in doc.get("results", []) if r.get("system") in ("offline", "per_segment", "hf_pipeline")]
    if base_rows:
        lines += ["### Baselines (same run, same audio, same model)", "", table(base_rows, BASELINE_COLUMNS, markdown=True), ""]
    if doc.get("idle"):
        lines += ["Idle (room tone through the realtime pipeline): " + ", ".join(f"{k} {v}" for k, v in doc["idle"].items()), ""]
    variants = [r for r in doc.get("results", []) if r.get("variant")]
    if variants:
        lines += ["### Model variants: fidelity of precision, feature reuse and normalisation", "",
                  table(variants, VARIANT_COLUMNS, markdown=True), ""]
    if doc.get("speed"):
        lines += _speed_tables(doc, markdown=True)
    if doc.get("threads"):
        lines += ["### Thread settings", "", table(doc["threads"], THREAD_COLUMNS, markdown=True), ""]
    if doc.get("sweep"):
        lines += ["### Window sweep", "", table(doc["sweep"], SWEEP_COLUMNS, markdown=True), ""]
    if doc.get("plot"):
        lines += [f"![latency vs look-ahead, RTF vs model size]({doc['plot']})", ""]
    for note in doc.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def update_markdown(path: Path, generated: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}", encoding="utf-8")


def plot_load(doc: dict, path: Path) -> Path | None:
    """Latency and RTF of the realtime runs against the machine's load (--busy-cores: 0, 1, 2 ... spinning
    processes beside streamer), one line per model."""
    try:
        import matplotlib
    except ImportError:
        return None
    rows = [r for r in doc.get("results", []) if r.get("mode") == "realtime" and r.get("busy_cores") is not None
            and r.get("system") == "streamer" and not r.get("variant")]
    if len({r["busy_cores"] for r in rows}) < 2:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for model in sorted({r["model"] for r in rows}):
        sel = sorted([r for r in rows if r["model"] == model], key=lambda r: r["busy_cores"])
        x = [r["busy_cores"] for r in sel]
        for key, label, style in (("partial_latency_p50_ms", "partial p50", "o-"), ("partial_latency_p95_ms", "partial p95", "o--"),
                                  ("commit_latency_p50_ms", "commit p50", "s-"), ("final_latency_p50_ms", "final p50", "^:")):
            a.plot(x, [r.get(key) for r in sel], style, label=f"{model} {label}")
        b.plot(x, [r.get("rtf") for r in sel], "o-", label=f"{model} RTF")
        for xi, r in zip(x, sel):
            b.annotate(f"{r.get('threads', '?')} thr, load {(r.get('loadavg_start') or ['?'])[0]}", (xi, r.get("rtf") or 0),
                       fontsize=7, textcoords="offset points", xytext=(4, 4))
    a.set_xlabel("busy cores beside streamer (of %s)" % doc.get("machine", {}).get("cores", "?"))
    a.set_ylabel("latency (ms), realtime pipeline")
    a.legend(fontsize=7)
    a.set_title("latency against load")
    b.axhline(0.5, color="orange", lw=0.8, ls=":")
    b.set_xlabel("busy cores beside streamer")
    b.set_ylabel("RTF (model compute / audio)")
    b.legend(fontsize=7)
    b.set_title("compute against load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
