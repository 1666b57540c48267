#!/usr/bin/env python3
"""Streamed finals vs the offline decode of the same model, on the demo model's held-out set.

For each window setting, every held-out clip (regenerated deterministically with espeak-ng from
tools/demo_heldout_manifest.tsv) is streamed through the real core (streamer.core.recognizer.Recognizer: VAD,
windows on the frame grid, stitching, the final pass) one hop per step, and its finals are joined; the reference is the
offline decode of the same clip (processor -> one forward pass -> argmax -> batch_decode, as
`streamer --offline`). Reports CER / WER between the two (jiwer), the share of identical clips, and the
model's CER against the true text both ways. The defaults are run as shipped (finals from one more pass over
each utterance, WindowConfig.final_pass_max_s) and with the final pass off, which measures the stitched
windows alone; the other window settings only change the stitched result, so they run with it off. Prints a
table and writes JSON.

    python tools/streaming_agreement.py --model demo --json benchmarks/results/agreement_demo.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

#: (hop_ms, left_context_ms, lookahead_ms) or None = the defaults in streamer/core/config.py; precision
#: ("default": streamer's choice for the model on CPU, float32 for the small demo model, int8 for >= 20 M
#: parameters; or "int8" forced); final pass on (as shipped) or off (the stitched windows alone).
SETTINGS = [(None, "default", True), (None, "int8", True), (None, "default", False), (None, "int8", False)] + [
    (w, "default", False) for w in ((160, 500, 320), (160, 1500, 320), (160, 750, 160), (160, 750, 640),
                                 (240, 750, 320), (480, 750, 320), (120, 750, 320))]


def offline(ctc, audio):
    from streamer.model.reference import reference_text

    return " ".join(reference_text(ctc.model, ctc.processor, audio).split())


def agreement(reference: list[str], hypothesis: list[str]) -> tuple[float, float, float]:
    """CER, WER and identical share of hypothesis against reference; clips empty on both sides are skipped
    (jiwer needs a non-empty reference)."""
    import jiwer

    pairs = [(r or "-", h) for r, h in zip(reference, hypothesis) if r or h]
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    same = sum(r == h for r, h in zip(reference, hypothesis)) / len(reference)
    return jiwer.cer(refs, hyps), jiwer.wer(refs, hyps), same


def streamed(ctc, audio, window):
    import numpy as np

    from streamer.core.config import Config
    from streamer.core.events import AudioChunk, FinalEvent
    from streamer.core.recognizer import Recognizer

    rec = Recognizer(ctc, Config(window=window))
    events = []
    block = 320  # 20 ms feed blocks, as a capture callback delivers them
    for i in range(0, len(audio), block):
        events += rec.feed(AudioChunk(i, np.ascontiguousarray(audio[i : i + block]), 16000))
    events += rec.finish()
    return " ".join(e.text for e in events if isinstance(e, FinalEvent) and e.text), rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--limit", type=int, default=0, help="clips per group (0: all)")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)

    import jiwer

    from streamer.core.config import ModelConfig, WindowConfig
    from streamer.model import load_model

    from eval_demo_model import load_heldout_clips

    # The reference is float32 (as `streamer --offline`); streaming runs at streamer's CPU default.
    ctc = load_model(ModelConfig(name=a.model, device="cpu"))
    ctc32 = load_model(ModelConfig(name=a.model, device="cpu", quantize=False)) if ctc.quantized else ctc
    models = {"default": ctc}  # an "int8" row only where the default is not int8 already
    if not ctc.quantized:
        models["int8"] = load_model(ModelConfig(name=a.model, device="cpu", quantize=True))
    data = load_heldout_clips(limit=a.limit or None)
    refs_true = [d[2] for d in data]
    t0 = time.time()
    off = [offline(ctc32, d[1]) for d in data]
    print(f"{len(data)} clips; offline CER vs truth {jiwer.cer(refs_true, off):.2%} ({time.time() - t0:.0f} s)")
    # The model's own sensitivity: the same offline decode with 0.3 s more silence on each side (what a
    # VAD pre-roll / hangover changes). Stitching cannot be expected to agree better than this.
    import numpy as np

    pad = np.zeros(int(0.3 * 16000), np.float32)
    padded = [offline(ctc32, np.concatenate([pad, d[1], pad])) for d in data]
    pad_cer, _, pad_same = agreement(off, padded)
    print(f"offline with 0.3 s more silence each side vs offline: CER {pad_cer:.2%}, identical {pad_same:.1%}")
    rows = []
    header = (f"{'prec':>7} {'hop':>5} {'left':>5} {'look':>5} {'pass':>5} {'CER vs offline':>15} {'WER vs offline':>15} "
              f"{'identical':>10} {'CER vs truth':>13} {'windows':>8}")
    print(header)
    for s, precision, final_pass in SETTINGS:
        window = WindowConfig() if s is None else WindowConfig(*s)
        if not final_pass:
            window = replace(window, final_pass_max_s=0.0)
        if precision not in models:
            continue
        model = models[precision]
        prec = "int8" if model.quantized else "float32"
        default = s is None and precision == "default" and final_pass
        outs, windows = [], 0
        for d in data:
            text, rec = streamed(model, d[1], window)
            outs.append(text)
            windows += rec.windows_run
        cer, wer, same = agreement(off, outs)
        row = {"precision": prec, "hop_ms": window.hop_ms, "left_context_ms": window.left_context_ms,
               "lookahead_ms": window.lookahead_ms, "final_pass_max_s": window.final_pass_max_s, "default": default,
               "cer_vs_offline": cer, "wer_vs_offline": wer, "identical_share": same,
               "cer_vs_truth": jiwer.cer(refs_true, outs), "windows": windows, "clips": len(data)}
        if s is None and precision == "default":  # the model's accuracy streamed at the defaults, per manifest group, beside offline
            for group in sorted({d[0]["group"] for d in data}):
                idx = [i for i, d in enumerate(data) if d[0]["group"] == group]
                t = [refs_true[i] for i in idx]
                row[group] = {"clips": len(idx),
                              "streamed_cer": jiwer.cer(t, [outs[i] for i in idx]),
                              "streamed_wer": jiwer.wer(t, [outs[i] for i in idx]),
                              "offline_cer": jiwer.cer(t, [off[i] for i in idx]),
                              "offline_wer": jiwer.wer(t, [off[i] for i in idx])}
        rows.append(row)
        tag = " (default)" if default else ""
        print(f"{prec:>7} {window.hop_ms:>5} {window.left_context_ms:>5} {window.lookahead_ms:>5} "
              f"{'on' if final_pass else 'off':>5} {cer:>15.2%} {wer:>15.2%} "
              f"{same:>10.1%} {row['cer_vs_truth']:>13.2%} {windows:>8}{tag}")
        sys.stdout.flush()
    for r in rows:
        for group, g in ((k, v) for k, v in r.items() if isinstance(v, dict)):
            print(f"{group} ({g['clips']} clips) against the truth, final pass {'on' if r['final_pass_max_s'] else 'off'}: "
                  f"streamed CER {g['streamed_cer']:.2%} WER {g['streamed_wer']:.2%}; "
                  f"offline CER {g['offline_cer']:.2%} WER {g['offline_wer']:.2%}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"model": a.model, "offline_cer_vs_truth": jiwer.cer(refs_true, off),
                                            "padded_offline_cer_vs_offline": pad_cer,
                                            "settings": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
