"""`streamer bench`: latency, compute and fidelity of streamer and of the alternatives, in the same run, on
the same audio and model, at the default settings unless told otherwise.

    streamer bench                      # base-size model, default settings, a short clip set (~2 min)
    streamer bench --model demo --clips all --modes realtime,unaware
    streamer bench --full               # everything in BENCHMARKS.md (~20 min): JSON, plot, BENCHMARKS.md
    streamer bench --full --gpu         # the GPU experiments (benchmarks/gpu_bench.sh)
    streamer bench --peers              # RealtimeSTT, WhisperLive, LocalAgreement beside streamer (~20 min)
    streamer bench --idle-live-s 30     # the real application's idle CPU on a virtual microphone, per thread

This module parses and dispatches; what one part measures is in parts.py (suite.py, runs.py, baselines.py,
metrics.py below it), and the full run that merges parts into BENCHMARKS.md is in full.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from streamer.cli.args import Parser, add_streaming_arguments
from streamer.core.config import Config

#: Model runs whose figures count for the headline: the base-size model at default settings, in real time.
HEADLINE_MODEL = "base"


def csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    from streamer.bench.runs import MODES

    p = Parser(prog="streamer bench", description="Benchmark streamer against the alternatives (see BENCHMARKS.md).")
    p.add_argument("--model", default=HEADLINE_MODEL,
                   help="base | large (random-init, real configs) | demo | tiny | a model folder (default base)")
    p.add_argument("--clips", default="quick", help="all | real | synthetic | quick | sweep | smoke | name,name,... (default quick)")
    p.add_argument("--realtime-clips", default=None, help="clip set for the realtime run (default: --clips)")
    p.add_argument("--modes", type=csv, default=["realtime", "unaware"], help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--baselines", default="all", help="all | none | comma list of offline, per_segment, hf_pipeline")
    p.add_argument("--busy-cores", default="0", metavar="N[,N...]",
                   help="also run the realtime mode with N processes spinning a core each (recorded with the run); "
                   "the idle run comes first (default 0: idle only)")
    p.add_argument("--stall-s", type=float, default=0.0,
                   help="also a realtime run with one stall of this long a third of the way in: time to catch up")
    p.add_argument("--idle-s", type=float, default=0.0, help="also measure idle CPU on this much room tone")
    p.add_argument("--idle-live-s", type=float, default=None, metavar="S",
                   help="only the real application's idle CPU: `streamer` on a PulseAudio virtual microphone playing "
                   "room tone, S seconds with --no-tui and S with the caption screen, thread by thread (idle_live.py)")
    p.add_argument("--variants", action="store_true", help="also run precision / reuse / normalisation variants (unaware)")
    p.add_argument("--stitched", action="store_true",
                   help="also an unaware run whose finals come from the stitched windows only (final pass off)")
    p.add_argument("--speed", type=csv, default=[], metavar="MODELS", help="speed work on these models (one window at a time)")
    p.add_argument("--speed-s", type=float, default=6.0, help="seconds of speech the speed work steps through")
    p.add_argument("--speed-variants", type=csv, default=None, help="only these speed variants (names as in the table)")
    p.add_argument("--threads-study", action="store_true",
                   help="int8 step time for 1 / 2 threads x OpenMP wait policy x a busy core beside it (one process each)")
    p.add_argument("--sweep", action="store_true", help="the hop / left context / look-ahead sweep")
    p.add_argument("--multi-utterance", choices=("synthetic", "real", "all"), default=None,
                   help="recordings of several sentences with pauses: streamed finals vs the offline decode of the "
                   "whole recording, both against the truth (see multi_utterance.py)")
    p.add_argument("--multi-utterance-count", type=int, default=6, metavar="N",
                   help="with --multi-utterance: synthetic recordings per voice group (default 6)")
    p.add_argument("--multi-utterance-study", action="store_true",
                   help="with --multi-utterance: also decode each utterance alone with more or less context "
                   "(pre-roll, silence after, audio before, whole-recording statistics)")
    p.add_argument("--full", action="store_true", help="everything, each part in its own process; writes --out and BENCHMARKS.md")
    p.add_argument("--gpu", action="store_true", help="with --full: the GPU experiments instead of the CPU ones")
    p.add_argument("--parts", default=None, help="with --full: only these parts (comma list), then merge; none: only merge")
    p.add_argument("--out", default=None, help="results folder for --full (default benchmarks/results)")
    p.add_argument("--json", default=None, help="write the results here (default: streamer-bench.json, or OUT/cpu.json with --full)")
    p.add_argument("--markdown", default=None, help="with --full: the BENCHMARKS.md to update (default: the repository's)")
    p.add_argument("--soak", type=float, default=None, metavar="MINUTES",
                   help="reliability soak: MINUTES of mixed audio through the streamer CLI with faults injected "
                   "(stall, overload, a full-disk output, closed stdout, non-finite samples; see soak.py)")
    p.add_argument("--soak-live", action="store_true",
                   help="with --soak: play the mix in real time into a PulseAudio virtual microphone, plus device loss")
    p.add_argument("--streams", default=None, metavar="N[,N...]",
                   help="many streams: N concurrent real-time vosk WebSocket clients against `streamer serve` "
                   "(partial latency, CPU, dropped samples, max N within p95 600 ms; see streams.py)")
    p.add_argument("--batch", action=argparse.BooleanOptionalAction, default=None,
                   help="with --streams: only batched / only one-window-at-a-time serving (default: both)")
    p.add_argument("--batch-wait-ms", type=float, default=None, help="with --streams: the server's --batch-wait-ms")
    p.add_argument("--streams-s", type=float, default=20.0, help="with --streams: seconds of audio per stream (default 20)")
    p.add_argument("--streams-chunk-ms", type=float, default=50.0, help="with --streams: audio per message (default 50)")
    p.add_argument("--memory", action="store_true",
                   help="resident memory after each stage of loading --model and after a window and a 20 s pass")
    p.add_argument("--tracemalloc", action="store_true", help="with --memory: also Python's own allocations")
    p.add_argument("--peers", nargs="?", const="all", default=None, metavar="SYSTEMS",
                   help="the Whisper peers side by side with streamer at real-time pace (all, or a comma list of "
                   "streamer, streamer_whisper_final, realtimestt, whisperlive, local_agreement; the peers need "
                   "bash benchmarks/peers/setup.sh; see peers.py); --markdown FILE rewrites its part of FILE")
    p.add_argument("--peers-clips", default="default", choices=("default", "real", "synthetic", "all"),
                   help="with --peers: the real recordings (less the 52 s one) and the demo clips (default)")
    p.add_argument("--peers-model", default="demo", help="with --peers: streamer's --model (default demo)")
    p.add_argument("--peers-rescore", default=None, metavar="JSON",
                   help="with --peers: score a results file's texts again (WER / CER) instead of running")
    p.add_argument("--render-synthetic", action="store_true", help="(re)render benchmarks/audio/synthetic with espeak-ng and exit")
    add_streaming_arguments(p)  # the same compute, window and VAD flags as streamer itself
    p.add_argument("--debug", action="store_true")
    return p


def say(msg: str) -> None:
    print(f"streamer bench: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render_synthetic:
        from streamer.bench.corpus import render_synthetic, synthetic_dir

        say(f"rendered {render_synthetic(synthetic_dir())}")
        return 0
    if args.memory:
        from streamer.bench.memory import memory_main

        return memory_main(args)
    if args.peers is not None:
        from streamer.bench.peers import peers_main

        return peers_main(args, argv)
    if args.streams is not None:
        from streamer.bench.streams import streams_main

        return streams_main(args, argv)
    if args.idle_live_s is not None:
        from streamer.bench.idle_live import idle_live_main

        return idle_live_main(args, argv)
    if args.soak is not None:
        from streamer.bench.soak import soak_main

        return soak_main(args, argv)
    if args.full:
        from streamer.bench.full import full

        return full(args)
    from streamer.bench import report
    from streamer.bench.full import merge
    from streamer.bench.parts import run_part
    from streamer.bench.suite import loadavg, machine

    started = time.time()
    doc: dict[str, Any] = {"command": "streamer bench " + " ".join(argv), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
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
    transcripts = {f"{r.get('model')}/{r.get('mode')}/{r.get('variant', '')}":
                   {"streamed": r.get("_texts"), "offline": r.get("_offline")}
                   for r in doc["results"] if r.get("_texts")}
    if transcripts:
        path.with_name(path.stem + ".transcripts.json").write_text(json.dumps(transcripts, indent=1), encoding="utf-8")
    if doc.get("multi_utterance"):
        from streamer.bench.multi_utterance import write_texts

        write_texts(doc["multi_utterance"], path.with_name(path.stem + ".multi_utterance.json"))
    print(report.render_terminal(doc))
    load_plot = report.plot_load(doc, path.with_name(path.stem + ".load.png"))
    if load_plot is not None:
        say(f"wrote {load_plot}")
    say(f"wrote {path}")
    return 0
