"""CPU time of the final pass that is left when an utterance ends, with and without the pieces computed while
it is spoken (WindowConfig.final_pass_prefetch, streamer.model.passfeatures): the base-size model (random init,
int8), one torch thread, the synthetic multi-utterance recordings (`streamer bench --multi-utterance`) fed to
the core in 20 ms blocks. CPU time of this thread (time.thread_time), so the figures change little with the
machine's load. Also the CPU the pieces and the windows cost per second of audio.

    python benchmarks/final_pass_cost.py [--count 2] [--json benchmarks/results/final_pass_cost.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2, help="recordings per voice group (default 2)")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args()

    import torch

    from streamer.bench.models import model_folder
    from streamer.bench.multi_utterance import BLOCK_SAMPLES, synthetic_recordings
    from streamer.core.config import MODEL_SAMPLE_RATE, Config, ModelConfig
    from streamer.core.events import AudioChunk
    from streamer.core.recognizer import Recognizer
    from streamer.model import load_model

    ctc = load_model(ModelConfig(name=model_folder("base"), device="cpu", quantize=True, threads=1))
    torch.set_num_threads(1)
    recs = synthetic_recordings(count=args.count)
    cost: dict = {}
    pass_logits, prepare_pass, logits = ctc.pass_logits, ctc.prepare_pass, ctc.logits

    def timed(fn, key):
        def call(audio, start=None):
            t = time.thread_time()
            out = fn(audio, start)
            dt = time.thread_time() - t
            if key == "pass" or start is None:  # logits(audio, None): the pass without prefetch
                cost["pass"].append((len(audio) / MODEL_SAMPLE_RATE, dt))
            else:
                cost[key] += dt
            return out
        return call

    ctc.pass_logits, ctc.prepare_pass, ctc.logits = timed(pass_logits, "pass"), timed(prepare_pass, "pieces"), timed(logits, "windows")
    out = {"loadavg_start": list(os.getloadavg()), "model": ctc.description, "recordings": len(recs)}
    for label in ("without prefetch", "with prefetch"):
        cfg = Config(window=dataclasses.replace(Config().window, final_pass_prefetch=label == "with prefetch"))
        cost.update({"pass": [], "pieces": 0.0, "windows": 0.0})
        before = dataclasses.replace(ctc.passes.counters) if ctc.passes is not None else None
        audio_s = 0.0
        for r in recs:
            ctc.reset()
            rec = Recognizer(ctc, cfg)
            for i in range(0, len(r.audio), BLOCK_SAMPLES):
                rec.feed(AudioChunk(i, np.ascontiguousarray(r.audio[i:i + BLOCK_SAMPLES]), MODEL_SAMPLE_RATE))
            rec.finish()
            audio_s += r.duration_s
        p = np.array(cost["pass"])
        row = {"passes": len(p), "pass_cpu_ms_p50": round(float(np.median(p[:, 1])) * 1000, 1),
               "pass_cpu_ms_p90": round(float(np.percentile(p[:, 1], 90)) * 1000, 1),
               "pass_audio_s_p50": round(float(np.median(p[:, 0])), 2),
               "pieces_cpu_s_per_audio_s": round(cost["pieces"] / audio_s, 4),
               "windows_cpu_s_per_audio_s": round(cost["windows"] / audio_s, 4), "audio_s": round(audio_s, 1)}
        if ctc.passes is not None and before is not None:
            c = ctc.passes.counters
            frames = c.frames - before.frames
            row["pass_frames_from_pieces"] = round((c.frames_prefetched - before.frames_prefetched) / frames, 3) if frames else 0.0
        out[label] = row
        print(label, row, flush=True)
    out["loadavg_end"] = list(os.getloadavg())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
