"""What each Whisper decode option costs the final pass, offline on the utterance spans of the real
recordings (assets/audio), one decode after another on this process's CPU:

    PYTHONPATH=$PWD .venv/bin/python benchmarks/whisper_options.py [--final-model tiny.en] [--repeat 2]

Per variant: WER / CER against the references (Whisper's English normaliser, as benchmarks/whisper_finals.py),
wall time per utterance p50 / p95 and CPU time p50 (all threads of the process) over the utterances up to 10 s (the median of --repeat runs each), and the
total. The spans are the VAD's segments (pre-roll + speech + tail) plus `silence` ms of the silence after
them (300 = all the VAD heard before ending the utterance; 0 = what there is when the early final pass runs).
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

configure_openmp()

import numpy as np  # noqa: E402

from streamer.bench.suite import Workload, loadavg  # noqa: E402
from streamer.core.config import Config, FinalModelConfig, ModelConfig  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from whisper_finals import SHORT_UTTERANCE_S, error_rates  # noqa: E402

#: name -> (silence ms after the segment, transcribe() keyword arguments over the final pass's own)
VARIANTS: dict[str, tuple[int, dict]] = {
    "final pass: word times, silence 0 ms": (0, {}),
    "silence 150 ms": (150, {}),
    "silence 300 ms (before)": (300, {}),
    "no word timestamps": (0, {"word_timestamps": False}),
    "no word timestamps, without_timestamps": (0, {"word_timestamps": False, "without_timestamps": True}),
    "beam 5": (0, {"beam_size": 5}),
    "encoder input = span + 1 s": (0, {"encoder_margin_s": 1.0}),
    "encoder input = span + 3 s": (0, {"encoder_margin_s": 3.0}),
    "encoder input = span + 3 s, silence 300 ms": (300, {"encoder_margin_s": 3.0}),
}


def shorten(model, samples: int, margin_s: float) -> None:
    """Encode only the span + margin_s of the 30 s input (rounded up to 1 s): CTranslate2 takes fewer frames."""
    frames = min(3000, int(100 * np.ceil(samples / 16000 + margin_s)))
    encode = type(model).encode

    def short(features):
        return encode(model, features[..., :frames])

    model.encode = short


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--final-model", default="tiny.en")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="*", default=[0])
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    from streamer.model.whisper import load_final_model

    config = Config(model=ModelConfig(name="demo")).validate()
    work = Workload.build("real", config)
    names = [p.clip.name for p in work.session.placements]
    refs = [p.clip.reference for p in work.session.placements]
    print(json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(), "load_before": loadavg(),
                      "segments": len(work.segments)}))
    for threads in args.threads:
        whisper = load_final_model(FinalModelConfig(name=args.final_model, threads=threads, nice=0))
        c = whisper.config
        for label, (silence_ms, kw) in VARIANTS.items():
            if args.only and not any(o in label for o in args.only):
                continue
            base = dict(language="en", beam_size=c.beam_size, best_of=1, temperature=0.0,
                        condition_on_previous_text=False, word_timestamps=True,
                        no_speech_threshold=c.no_speech_threshold, vad_filter=False)
            base.update(kw)
            margin_s = base.pop("encoder_margin_s", None)
            heard = int(silence_ms * 16)
            per_clip: dict[str, list[str]] = {}
            times = []
            cpu = []
            for seg in work.segments:
                audio = work.session.audio[seg.start_sample:min(seg.detected_sample, seg.end_sample + heard)]
                runs = []
                cpus = []
                for _ in range(args.repeat):
                    if margin_s is not None:
                        shorten(whisper.model, len(audio), margin_s)
                    t0, c0 = time.perf_counter(), time.process_time()
                    segments, _ = whisper.model.transcribe(np.asarray(audio, np.float32), **base)
                    text = " ".join(s.text.strip() for s in segments)
                    runs.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
                    if margin_s is not None:
                        del whisper.model.encode
                times.append((seg.duration_s, float(np.median(runs))))
                cpu.append((seg.duration_s, float(np.median(cpus))))
                per_clip.setdefault(work.clip_of_segment(seg), []).append(text)
            hyps = [" ".join(per_clip.get(n, [])) for n in names]
            short = [t for d, t in times if d <= SHORT_UTTERANCE_S]
            short_cpu = [t for d, t in cpu if d <= SHORT_UTTERANCE_S]
            print(json.dumps({"variant": label, "threads": threads, **error_rates(refs, hyps),
                              "p50_ms": round(1000 * float(np.percentile(short, 50))),
                              "p95_ms": round(1000 * float(np.percentile(short, 95))),
                              "cpu_p50_ms": round(1000 * float(np.percentile(short_cpu, 50))),
                              "total_s": round(sum(t for _, t in times), 2), "load": loadavg()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
