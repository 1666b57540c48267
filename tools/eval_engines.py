#!/usr/bin/env python3
"""Offline greedy-CTC accuracy of the demo model on other speech than espeak-ng (demo model v2, issue 30).

Groups (CER / WER with jiwer, each clip decoded alone, as tools/eval_demo_model.py decodes):

- ``flite``: the HELD-OUT engine (never in training): the first --limit held-out sentences of
  tools/demo_heldout_manifest.tsv, voices kal, kal16, awb, rms, slt in turn.
- ``festival``: the same sentences with the festival voices kal, ked, slt in turn (a training engine;
  the sentences are held out).
- ``piper``: the same sentences with the piper en_US joe voice (a training engine; sentences held out).
- ``real``: the 18 human recordings in assets/audio (MANIFEST.tsv references; the two non-speech files are
  left out). NEVER used in training or tuning: they are the measurement.

The espeak-ng groups (seen voices, held-out voice) are tools/eval_demo_model.py's.

    python tools/eval_engines.py --model assets/demo_model --json build/eval_engines.json
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_voices as dv  # noqa: E402

import demo_corpus as dc  # noqa: E402
from eval_demo_model import MANIFEST, transcribe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "assets" / "audio"
GROUPS = ("flite", "festival", "piper", "real")


def heldout_sentences(limit: int) -> list[str]:
    """The speak texts of the held-out manifest's first group (sentences never trained on), in order."""
    items = [it for it in dc.read_manifest(MANIFEST) if it["group"] == "seen_voices"]
    return [it["text"] for it in items[:limit]]


def synth(group: str, texts: list[str]) -> list[np.ndarray]:
    out = []
    for i, t in enumerate(texts):
        stretch = 0.9 + 0.2 * ((i * 7) % 11) / 10  # 0.9-1.1, fixed per sentence
        if group == "flite":
            out.append(dv.flite(t, dv.FLITE_VOICES[i % len(dv.FLITE_VOICES)], stretch))
        elif group == "festival":
            out.append(dv.festival(t, dv.FESTIVAL_VOICES[i % len(dv.FESTIVAL_VOICES)], stretch))
        elif group == "piper":
            out.append(dv.piper(t, length_scale=stretch, threads=2))
    return out


def real_recordings() -> list[tuple[str, np.ndarray, str]]:
    """(file, float32 16 kHz audio, normalised reference) for the speech recordings in assets/audio."""
    import soxr
    rows = list(csv.DictReader((AUDIO / "MANIFEST.tsv").open(), delimiter="\t"))
    out = []
    for r in rows:
        if not r["reference_transcript"].strip():
            continue
        with wave.open(str(AUDIO / r["file"])) as w:
            sr, ch = w.getframerate(), w.getnchannels()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        if ch > 1:
            x = x.reshape(-1, ch).mean(1)
        if sr != 16000:
            x = soxr.resample(x, sr, 16000).astype(np.float32)
        out.append((r["file"], x, dc.label_of(r["reference_transcript"])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo_model"))
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    ap.add_argument("--limit", type=int, default=60, help="held-out sentences per synthetic group")
    ap.add_argument("--fp16", action="store_true", help="round the weights to fp16 (then compute in fp32)")
    ap.add_argument("--json", default="", help="write results here")
    ap.add_argument("--show", type=int, default=2, help="print this many errors per group")
    a = ap.parse_args(argv)

    import jiwer
    import torch
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
    model = Wav2Vec2ForCTC.from_pretrained(a.model).float().eval()
    if a.fp16:
        model = model.half().float()
    processor = Wav2Vec2Processor.from_pretrained(a.model)
    texts = heldout_sentences(a.limit)
    results: dict = {"model": a.model, "fp16_weights": a.fp16, "limit": a.limit, "groups": {}}
    print(f"{'group':<10} {'n':>4} {'audio_s':>8} {'CER':>7} {'WER':>7}")
    for g in a.groups:
        t0 = time.time()
        if g == "real":
            rec = real_recordings()
            names, audios, refs = [r[0] for r in rec], [r[1] for r in rec], [r[2] for r in rec]
        else:
            audios, refs, names = synth(g, texts), [dc.label_of(t) for t in texts], [str(i) for i in range(len(texts))]
        hyps = transcribe(model, processor, audios, batch_size=1)
        cer, wer = jiwer.cer(refs, hyps), jiwer.wer(refs, hyps)
        audio_s = sum(len(x) for x in audios) / 16000
        results["groups"][g] = {"n": len(refs), "cer": cer, "wer": wer, "audio_seconds": audio_s,
                                "seconds": time.time() - t0,
                                "examples": [{"id": n, "ref": r, "hyp": h} for n, r, h in zip(names, refs, hyps)]}
        print(f"{g:<10} {len(refs):>4} {audio_s:>8.0f} {cer:>7.2%} {wer:>7.2%}", flush=True)
        for r, h in [(r, h) for r, h in zip(refs, hyps) if r != h][:a.show]:
            print(f"    REF: {r}\n    HYP: {h}")
    print(f"torch threads: {torch.get_num_threads()}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
