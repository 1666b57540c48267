#!/usr/bin/env python3
"""The demo model's n-gram language model: its text, its Hugging Face layout, alpha/beta tuning, evaluation.

tools/build_demo_lm.sh runs `text`, KenLM's lmplz and build_binary, then `layout --tune`. Text and tuning use
TRAINING-side material only: the LM is estimated from build/demo_corpus/train.tsv less a dev slice (a hash of
each sentence, like the corpus's own train / held-out split), and alpha/beta are chosen on that dev slice
rendered with training voices. The held-out and everyday manifests are only ever measured (`eval`, `streamed`).

    python tools/demo_lm.py text --corpus build/demo_corpus/train.tsv --out build/demo_lm
    python tools/demo_lm.py layout --work build/demo_lm --model assets/demo_model --tune
    python tools/demo_lm.py eval --json build/demo_lm/eval.json          # held-out + everyday, offline
    python tools/demo_lm.py streamed --json build/demo_lm/streamed.json  # multi-sentence everyday recordings
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

import demo_corpus as dc  # noqa: E402

#: Share of training sentences (per mille, by hash) kept out of the LM text for tuning alpha/beta.
DEV_PERMILLE = 10
#: Dev clips rendered for tuning (training voices, the held-out manifest's speed / pitch ranges).
DEV_CLIPS = 160
#: The grid searched: LM weight and word bonus.
ALPHAS = (0.3, 0.5, 0.8, 1.2, 1.6)
BETAS = (0.0, 1.0, 2.0, 3.0)
EVERYDAY = ROOT / "tools" / "demo_everyday_manifest.tsv"
HELDOUT = ROOT / "tools" / "demo_heldout_manifest.tsv"


def is_dev(label: str) -> bool:
    return int(hashlib.sha1(("lm-dev:" + label).encode()).hexdigest()[:8], 16) % 1000 < DEV_PERMILLE


def cmd_text(a) -> None:
    rows = dc.read_corpus(Path(a.corpus))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # the corpus split keeps held-out sentences out of train.tsv already; the everyday sentences were written
    # separately, so any that happens to be in the corpus is dropped here too
    evaluation = {dc.label_of(it["text"]) for m in (HELDOUT, EVERYDAY) for it in dc.read_manifest(m)}
    n_lm = n_dev = n_eval = 0
    with open(out / "lm_text.txt", "w", encoding="utf-8") as lm, open(out / "dev.tsv", "w", encoding="utf-8") as dev:
        for src, text in rows:
            label = dc.label_of(text)
            if not label:
                continue
            if label in evaluation:
                n_eval += 1
                continue
            if is_dev(label):
                dev.write(f"{src}\t{text}\n")
                n_dev += 1
            else:
                lm.write(label + "\n")
                n_lm += 1
    print(f"demo_lm text: {n_lm} sentences for the LM, {n_dev} dev sentences for tuning, {n_eval} evaluation "
          f"sentences dropped ({out})")


def arpa_unigrams(arpa: Path) -> list[str]:
    words, inside = [], False
    with open(arpa, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
            elif line.startswith("\\") and inside:
                break
            elif inside and line:
                w = line.split("\t")[1]
                if w not in ("<s>", "</s>", "<unk>"):
                    words.append(w)
    return words


def dev_items(work: Path, n: int, seed: int = 4321) -> list[dict]:
    """Dev clips: dev sentences of 1-30 words in training voices, settings drawn like the held-out manifest."""
    rows = [r for r in dc.read_corpus(work / "dev.tsv") if 1 <= len(r[1].split()) <= 30]
    rng = random.Random(seed)
    rng.shuffle(rows)
    items = []
    for k, (_src, text) in enumerate(rows[:n]):
        var = rng.choice(dc.TRAIN_VARIANTS)
        items.append({"id": f"dev_{k:04d}", "group": "dev", "voice": rng.choice(dc.TRAIN_ACCENTS) + ("+" + var if var else ""),
                      "speed": rng.randint(*dc.MANIFEST_SPEED_WPM), "pitch": rng.randint(*dc.MANIFEST_PITCH),
                      "lead_s": round(rng.uniform(0.05, 0.4), 3), "trail_s": round(rng.uniform(0.05, 0.4), 3),
                      "snr_db": 30.0, "seed": rng.randint(0, 2 ** 31 - 1), "text": text})
    return items


def offline_logits(ctc, audios):
    from streamer.model.reference import reference_decode

    out = []
    for x in audios:
        r = reference_decode(ctc.model, ctc.processor, x)
        out.append((" ".join(r.text.split()), r.logits))
    return out


def load(model: str, quantize=None):
    from streamer.core.config import ModelConfig
    from streamer.model import load_model

    return load_model(ModelConfig(name=model, device="cpu", quantize=quantize))


def rescorer_for(ctc, lm_dir: Path | None = None):
    from streamer.model.beam import BeamRescorer
    from streamer.model.language_model import read_language_model

    folder = lm_dir or ctc.language_model_dir
    if folder is None:
        raise SystemExit(f"{ctc.name} ships no language_model/ folder")
    return BeamRescorer(ctc.vocabulary, language_model=read_language_model(folder, ctc.vocabulary))


def tune(work: Path, model_dir: Path) -> dict:
    import jiwer

    from eval_demo_model import load_heldout_clips

    items = dev_items(work, DEV_CLIPS)
    tmp = work / "dev_manifest.tsv"
    dc.write_manifest(items, tmp)
    data = load_heldout_clips(tmp)
    ctc = load(str(model_dir))
    decoded = offline_logits(ctc, [d[1] for d in data])
    refs = [d[2] for d in data]
    greedy_wer = jiwer.wer(refs, [t for t, _ in decoded])
    rescorer = rescorer_for(ctc, model_dir / "language_model")
    grid = []
    for alpha in ALPHAS:
        for beta in BETAS:
            rescorer.decoder.reset_params(alpha=alpha, beta=beta)
            hyps = [rescorer(lg) for _, lg in decoded]
            grid.append({"alpha": alpha, "beta": beta, "wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)})
            print(f"  alpha {alpha:<4} beta {beta:<4} dev WER {grid[-1]['wer']:.2%} CER {grid[-1]['cer']:.2%}", flush=True)
    best = min(grid, key=lambda g: (round(g["wer"], 4), g["alpha"]))
    result = {"dev_clips": len(data), "greedy_wer": greedy_wer, "greedy_cer": jiwer.cer(refs, [t for t, _ in decoded]),
              "best": best, "grid": grid}
    (work / "tune.json").write_text(json.dumps(result, indent=1))
    print(f"demo_lm tune: dev greedy WER {greedy_wer:.2%}; best alpha {best['alpha']} beta {best['beta']} "
          f"WER {best['wer']:.2%} ({len(data)} clips)")
    return best


def cmd_layout(a) -> None:
    from pyctcdecode.alphabet import Alphabet

    from streamer.core.decoding import Vocabulary

    work, model_dir = Path(a.work), Path(a.model)
    folder = model_dir / "language_model"
    attrs = {"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": True}  # pyctcdecode's defaults
    if (folder / "attrs.json").is_file():
        attrs.update(json.loads((folder / "attrs.json").read_text()))
    vocab = json.loads((model_dir / "vocab.json").read_text())
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    Vocabulary(tuple(tokens), vocab["<pad>"], "|")  # the tokens streamer decodes with
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (model_dir / "alphabet.json").write_text(Alphabet.build_alphabet(tokens).dumps())
    shutil.copy(work / "lm.bin", folder / "lm.bin")
    (folder / "unigrams.txt").write_text("\n".join(sorted(arpa_unigrams(work / "lm.arpa"))) + "\n")
    (folder / "attrs.json").write_text(json.dumps(attrs))
    if a.tune:
        best = tune(work, model_dir)
        attrs.update(alpha=best["alpha"], beta=best["beta"])
        (folder / "attrs.json").write_text(json.dumps(attrs))
    print(f"demo_lm layout: {folder} ({json.dumps(attrs)})")


def percentile(xs, q):
    import numpy as np

    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def cmd_eval(a) -> None:
    """Offline (one pass per clip) greedy vs LM finals on the held-out and everyday manifests."""
    import jiwer

    from eval_demo_model import load_heldout_clips

    ctc = load(a.model)
    rescorer = rescorer_for(ctc)
    results = {"model": a.model, "language_model": rescorer.language_model.describe(), "sets": {}}
    times_ms: list[float] = []
    for name, manifest in (("heldout", HELDOUT), ("everyday", EVERYDAY)):
        data = load_heldout_clips(manifest, limit=a.limit or None)
        decoded = offline_logits(ctc, [d[1] for d in data])
        lm_text = []
        for _, lg in decoded:
            t0 = time.perf_counter()
            lm_text.append(rescorer(lg))
            times_ms.append((time.perf_counter() - t0) * 1000)
        for group in sorted({d[0]["group"] for d in data}):
            idx = [i for i, d in enumerate(data) if d[0]["group"] == group]
            refs = [data[i][2] for i in idx]
            g = [decoded[i][0] for i in idx]
            b = [lm_text[i] for i in idx]
            row = {"clips": len(idx), "greedy_wer": jiwer.wer(refs, g), "lm_wer": jiwer.wer(refs, b),
                   "greedy_cer": jiwer.cer(refs, g), "lm_cer": jiwer.cer(refs, b)}
            results["sets"][f"{name}/{group}"] = row
            print(f"{name + '/' + group:<24} {len(idx):>4} clips  WER greedy {row['greedy_wer']:.2%} -> LM {row['lm_wer']:.2%}"
                  f"   CER {row['greedy_cer']:.2%} -> {row['lm_cer']:.2%}", flush=True)
    results["rescore_ms"] = {"n": len(times_ms), "p50": percentile(times_ms, 50), "p95": percentile(times_ms, 95)}
    print(f"LM beam search per clip: p50 {results['rescore_ms']['p50']:.0f} ms, p95 {results['rescore_ms']['p95']:.0f} ms")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1))


def recordings(per_recording: int, seed: int = 30):
    """Multi-sentence recordings: the everyday manifest's seen-voice clips, `per_recording` consecutive clips
    each (their voices as drawn there), joined by pauses of 0.3-2 s."""
    import numpy as np

    from eval_demo_model import load_heldout_clips

    data = load_heldout_clips(EVERYDAY, groups=["seen_voices"])
    rng = random.Random(seed)
    out = []
    for k in range(0, len(data) - per_recording + 1, per_recording):
        parts, truth = [], []
        for _it, audio, ref in data[k:k + per_recording]:
            parts += [audio, np.zeros(int(rng.uniform(0.3, 2.0) * dc.SAMPLE_RATE), np.float32)]
            truth.append(ref)
        out.append((np.concatenate(parts[:-1]), " ".join(truth)))
    return out


def cmd_streamed(a) -> None:
    """Streamed finals (the real core Recognizer, 20 ms blocks, default Config) on multi-sentence recordings,
    greedy and with the LM, against the truth; the time of each LM final's beam search."""
    import jiwer
    import numpy as np

    from streamer.core.config import Config
    from streamer.core.events import AudioChunk, FinalEvent
    from streamer.core.recognizer import Recognizer

    ctc = load(a.model)
    rescorer = rescorer_for(ctc)
    times_ms: list[float] = []

    def timed(logits):
        t0 = time.perf_counter()
        text = rescorer(logits)
        times_ms.append((time.perf_counter() - t0) * 1000)
        return text

    def stream(audio, final_rescorer):
        rec = Recognizer(ctc, Config(), final_rescorer=final_rescorer)
        events = []
        for i in range(0, len(audio), 320):
            events += rec.feed(AudioChunk(i, np.ascontiguousarray(audio[i:i + 320]), dc.SAMPLE_RATE))
        events += rec.finish()
        return " ".join(e.text for e in events if isinstance(e, FinalEvent) and e.text)

    if a.source == "bench":  # streamer bench --multi-utterance's recordings (streamer/bench/multi_utterance.py)
        from streamer.bench.multi_utterance import synthetic_recordings

        recs = [(r.audio, r.truth) for r in synthetic_recordings(a.count) if r.group == "seen_voices"]
    else:
        recs = recordings(a.per_recording)
    truth = [t for _, t in recs]
    greedy = [stream(x, None) for x, _ in recs]
    lm = [stream(x, timed) for x, _ in recs]
    offline = offline_logits(ctc, [x for x, _ in recs])
    res = {"model": a.model, "source": a.source, "recordings": len(recs), "sentences_per_recording": a.per_recording,
           "audio_s": sum(len(x) for x, _ in recs) / dc.SAMPLE_RATE,
           "streamed_greedy_wer": jiwer.wer(truth, greedy), "streamed_lm_wer": jiwer.wer(truth, lm),
           "streamed_greedy_cer": jiwer.cer(truth, greedy), "streamed_lm_cer": jiwer.cer(truth, lm),
           "offline_greedy_wer": jiwer.wer(truth, [t for t, _ in offline]),
           "offline_lm_wer": jiwer.wer(truth, [rescorer(lg) for _, lg in offline]),
           "lm_final_ms": {"n": len(times_ms), "p50": percentile(times_ms, 50), "p95": percentile(times_ms, 95),
                           "max": max(times_ms, default=float("nan"))},
           "examples": [{"truth": t, "greedy": g, "lm": b} for t, g, b in list(zip(truth, greedy, lm))[:3]]}
    print(f"{len(recs)} recordings ({a.source}; seen voices, {res['audio_s']:.0f} s): "
          f"streamed WER greedy {res['streamed_greedy_wer']:.2%} -> LM {res['streamed_lm_wer']:.2%} "
          f"(CER {res['streamed_greedy_cer']:.2%} -> {res['streamed_lm_cer']:.2%}); offline WER greedy "
          f"{res['offline_greedy_wer']:.2%} -> LM {res['offline_lm_wer']:.2%}")
    print(f"LM beam search per final: p50 {res['lm_final_ms']['p50']:.0f} ms, p95 {res['lm_final_ms']['p95']:.0f} ms "
          f"({len(times_ms)} finals)")
    for ex in res["examples"]:
        print(f"  TRUTH {ex['truth']}\n  GREEDY {ex['greedy']}\n  LM    {ex['lm']}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("text", help="LM text and the dev slice from the training corpus")
    t.add_argument("--corpus", default="build/demo_corpus/train.tsv")
    t.add_argument("--out", default="build/demo_lm")
    la = sub.add_parser("layout", help="write alphabet.json and language_model/ into the model folder")
    la.add_argument("--work", default="build/demo_lm")
    la.add_argument("--model", default=str(ROOT / "assets" / "demo_model"))
    la.add_argument("--tune", action="store_true", help="choose alpha/beta on the dev slice")
    e = sub.add_parser("eval", help="greedy vs LM on the held-out and everyday manifests (offline decode)")
    e.add_argument("--model", default="demo")
    e.add_argument("--limit", type=int, default=0, help="clips per group (0: all)")
    e.add_argument("--json", default="")
    s = sub.add_parser("streamed", help="greedy vs LM streamed finals on multi-sentence everyday recordings")
    s.add_argument("--model", default="demo")
    s.add_argument("--source", choices=("everyday", "bench"), default="everyday",
                   help="everyday: the 40 everyday sentences in training voices, --per-recording to a recording; "
                        "bench: the training-voice recordings of streamer bench --multi-utterance (4 sentences each)")
    s.add_argument("--per-recording", type=int, default=4)
    s.add_argument("--count", type=int, default=6, help="with --source bench: recordings per voice group")
    s.add_argument("--json", default="")
    a = ap.parse_args(argv)
    {"text": cmd_text, "layout": cmd_layout, "eval": cmd_eval, "streamed": cmd_streamed}[a.cmd](a)


if __name__ == "__main__":
    main()
