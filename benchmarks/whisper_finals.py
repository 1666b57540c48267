"""The Whisper final pass (--final-model) measured on the real recordings (assets/audio): fidelity of its
finals against Whisper's own offline decode, end of speech -> final, and what it costs the CTC path.

    .venv/bin/python benchmarks/whisper_finals.py [--model demo] [--final-model tiny.en] [--json out.json]

One process, one run each, on the same session of clips (the 18 real recordings one after another with 1 s
of room tone between them, as `streamer bench` lays them out):
- realtime, final pass off and on: the application's Session fed at real-time pace in 20 ms blocks
  (streamer.bench.runs.run_realtime); partial latency p50 / p95, RTF of the CTC path (its compute / audio),
  CPU per audio second, end of speech -> final p50 / p95 (all utterances, and those up to 10 s);
- Whisper offline, the same model and settings (int8, greedy) on each whole recording, and on the same
  utterance spans the final pass decodes (the VAD's segments with FinalModelConfig.silence_ms after them),
  without streaming; also on those spans with all the silence the VAD heard (300 ms, the earlier spans).
WER / CER against the references in MANIFEST.tsv after Whisper's English normaliser (both sides: casing,
punctuation, "10" / "ten", "Mr." / "mister"), summed over the recordings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamer.model.runtime import configure_openmp  # noqa: E402

configure_openmp()  # as the command line does, before torch (and CTranslate2's OpenMP) load

from streamer.bench.metrics import edit_distance, percentile_ms, segment_timings  # noqa: E402
from streamer.bench.runs import run_realtime  # noqa: E402
from streamer.bench.suite import Workload, loadavg, summarize_run  # noqa: E402
from streamer.core.config import Config, FinalModelConfig, ModelConfig  # noqa: E402

#: Utterances up to this long are the ones the end -> final target is set for.
SHORT_UTTERANCE_S = 10.0


def normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def error_rates(refs: list[str], hyps: list[str]) -> dict:
    norm = normalizer()
    r = [norm(x) for x in refs]
    h = [norm(x) for x in hyps]
    words = sum(len(x.split()) for x in r)
    chars = sum(len(x) for x in r)
    return {"wer": round(100 * sum(edit_distance(a.split(), b.split()) for a, b in zip(r, h)) / words, 2),
            "cer": round(100 * sum(edit_distance(a, b) for a, b in zip(r, h)) / chars, 2)}


def final_latencies(run, work: Workload, ctc) -> tuple[list[float], list[float]]:
    """End of speech (last voiced VAD frame) -> the utterance's final, seconds: all, and up to 10 s."""
    every, short = [], []
    for t in segment_timings(run.events, work.segments, ctc.geometry):
        if t.final_s is None:
            continue
        d = t.final_s - float(run.arrival(t.segment.speech_end_sample))
        every.append(d)
        if t.segment.duration_s <= SHORT_UTTERANCE_S:
            short.append(d)
    return every, short


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--final-model", default="tiny.en")
    ap.add_argument("--clips", default="real")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--final-threads", type=int, default=FinalModelConfig.threads,
                    help="CTranslate2 threads of the final pass (0: one per core)")
    ap.add_argument("--final-nice", type=int, default=FinalModelConfig.nice,
                    help="how much nicer the final pass runs (0: as the worker, for a box shared with nice-0 work)")
    args = ap.parse_args()

    from streamer.model import load_model
    from streamer.model.whisper import load_final_model

    config = Config(model=ModelConfig(name=args.model)).validate()
    ctc = load_model(config.model)
    whisper = load_final_model(FinalModelConfig(name=args.final_model, nice=args.final_nice, threads=args.final_threads))
    work = Workload.build(args.clips, config)
    names = [p.clip.name for p in work.session.placements]
    refs = [p.clip.reference for p in work.session.placements]
    out: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "model": args.model,
                 "final_model": whisper.description, "audio_s": round(work.session.duration_s, 1),
                 "recordings": len(names), "segments": len(work.segments), "load_before": loadavg()}

    # Whisper offline: whole recordings, and the very spans the final pass decodes
    t0 = time.perf_counter()
    whole = [whisper.transcribe(p.clip.audio).text for p in work.session.placements]
    whole_s = time.perf_counter() - t0
    out["whisper_offline_whole"] = {**error_rates(refs, whole), "rtf": round(whole_s / work.session.duration_s, 4)}
    for key, silence in (("whisper_offline_spans", int(whisper.config.silence_ms * 16)),
                         ("whisper_offline_spans_heard_silence", config.vad.heard_silence_samples())):
        per_clip: dict[str, list[str]] = {}
        for seg in work.segments:
            audio = work.session.audio[seg.start_sample:min(seg.detected_sample, seg.end_sample + silence)]
            per_clip.setdefault(work.clip_of_segment(seg), []).append(whisper.transcribe(audio).text)
        out[key] = error_rates(refs, [" ".join(per_clip.get(n, [])) for n in names])

    runs = {}
    for label, fm in (("ctc_only", None), ("final_pass", whisper)):
        run = run_realtime(ctc, config, work.session.audio, final_model=fm)
        s = summarize_run(run, work, ctc, config, None)
        every, short = final_latencies(run, work, ctc)
        texts = [s["_texts"][n] for n in names]
        runs[label] = {
            **error_rates(refs, texts),
            "partial_latency_p50_ms": s["partial_latency_p50_ms"], "partial_latency_p95_ms": s["partial_latency_p95_ms"],
            "rtf_ctc": s["rtf"], "cpu_s_per_audio_s": s["cpu_s_per_audio_s"],
            "final_latency_p50_ms": percentile_ms(every, 50), "final_latency_p95_ms": percentile_ms(every, 95),
            "final_latency_upto10s_p50_ms": percentile_ms(short, 50), "utterances_upto10s": len(short),
            "dropped_samples": s["dropped_samples"], "max_lag_s": s["max_lag_s"],
            **{k: v for k, v in run.extra.items() if k.startswith("final_pass")},
            "_texts": dict(zip(names, texts)),
        }
    out["runs"] = runs
    out["load_after"] = loadavg()
    on, off = runs["final_pass"], runs["ctc_only"]
    out["summary"] = {
        "wer_final_pass_minus_whisper_offline_whole": round(on["wer"] - out["whisper_offline_whole"]["wer"], 2),
        "wer_final_pass_minus_whisper_offline_spans": round(on["wer"] - out["whisper_offline_spans"]["wer"], 2),
        "partial_p50_change_pct": round(100 * (on["partial_latency_p50_ms"] / off["partial_latency_p50_ms"] - 1), 1),
        "rtf_ctc_change_pct": round(100 * (on["rtf_ctc"] / off["rtf_ctc"] - 1), 1),
        "final_upto10s_p50_ms_target": config.vad.hangover_ms + 400,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    for label, r in runs.items():
        print(label, json.dumps({k: v for k, v in r.items() if k != "_texts"}))
    for n, w, t in zip(names, whole, runs["final_pass"]["_texts"].values()):
        print(f"  {n[:34]:34s} offline: {w[:70]!r}\n  {'':34s} final:   {t[:70]!r}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
