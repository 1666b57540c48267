"""Multi-utterance recordings: several sentences with pauses between them, as people dictate, streamed through the
core and compared with the offline decode of the whole recording (`streamer bench --multi-utterance`).

Two sets of recordings:

- synthetic: sentences of tools/demo_everyday_manifest.tsv and tools/demo_heldout_manifest.tsv rendered with
  espeak-ng in the manifests' voices (the demo model's training voices and its held-out voice), several per
  recording with pauses of 0.3-2 s between them (a pause under the VAD hangover joins two sentences into one
  utterance, as it does when a person hurries on);
- real: the speech recordings of assets/audio concatenated a few at a time with the same kind of pauses.

For each recording: the streamed finals joined (the Recognizer fed 20 ms blocks, as a capture callback
delivers them) against the offline decode of the whole recording (`streamer.model.reference`, one forward
pass over all of it, as `streamer --offline` does), and both against the truth (CER / WER, jiwer, summed over
the recordings). Latency is not measured here (the streamer part measures final latency in real time).
"""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.bench.corpus import ROOM_TONE_RMS, espeak, real_clips, repo_root
from streamer.core.config import MODEL_SAMPLE_RATE, Config
from streamer.core.events import AudioChunk, FinalEvent

#: Pauses between the sentences of a recording, drawn uniformly: shorter than the VAD hangover (two
#: sentences become one utterance) up to a long breath.
PAUSE_S = (0.3, 2.0)
#: Sentences per synthetic recording, and real clips per real recording.
SENTENCES_PER_RECORDING = 4
CLIPS_PER_RECORDING = 3
#: Real clips longer than this are left out (a recording would exceed the final pass's 20 s limit by itself).
MAX_REAL_CLIP_S = 16.0
#: Signal-to-noise ratio of the noise floor laid over a whole recording: synthetic speech as the manifests
#: render it; the real recordings have their own noise, so theirs only fills the pauses.
SYNTH_SNR_DB = 30.0
REAL_SNR_DB = 50.0
BLOCK_SAMPLES = MODEL_SAMPLE_RATE // 50  # 20 ms


@dataclass(frozen=True)
class Recording:
    name: str
    group: str  # seen_voices | heldout_voice | real
    audio: np.ndarray
    #: The true text of each sentence / clip, in order (upper case, base-960h characters).
    sentences: tuple[str, ...]
    voices: tuple[str, ...]

    @property
    def truth(self) -> str:
        return " ".join(self.sentences)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / MODEL_SAMPLE_RATE


def label(text: str) -> str:
    """The CTC transcript of a sentence: upper case, letters and apostrophes (tools/demo_corpus.label_of)."""
    return " ".join(w for w in (re.sub(r"[^A-Z']", "", t.upper()) for t in text.split()) if w)


def _manifest(name: str) -> list[dict[str, str]]:
    with open(repo_root() / "tools" / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _join(parts: list[np.ndarray], rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Parts with pauses before, between (PAUSE_S) and after them, and one noise floor over the whole
    recording `snr_db` below the speech (a microphone's noise does not stop between sentences)."""
    gaps = [0.5] + [float(rng.uniform(*PAUSE_S)) for _ in parts[1:]] + [1.0]
    out = []
    for gap, p in zip(gaps, parts + [None]):
        out.append(np.zeros(int(gap * MODEL_SAMPLE_RATE), np.float32))
        if p is not None:
            out.append(p.astype(np.float32))
    x = np.concatenate(out)
    rms = float(np.sqrt(np.mean(np.concatenate(parts) ** 2)) + 1e-9)
    noise = rng.standard_normal(len(x)).astype(np.float32) * max(rms * 10 ** (-snr_db / 20), ROOM_TONE_RMS)
    return (x + noise).astype(np.float32)


def synthetic_recordings(count: int = 6, seed: int = 0) -> list[Recording]:
    """`count` recordings per voice group (training voices, the held-out voice), each of
    SENTENCES_PER_RECORDING everyday sentences (then held-out-manifest sentences) in the manifests' voices."""
    rows = _manifest("demo_everyday_manifest.tsv") + _manifest("demo_heldout_manifest.tsv")
    rng = np.random.default_rng(seed)
    out = []
    for group in ("seen_voices", "heldout_voice"):
        items = [r for r in rows if r["group"] == group]
        for k in range(count):
            chosen = items[k * SENTENCES_PER_RECORDING:(k + 1) * SENTENCES_PER_RECORDING]
            parts = [espeak(it["text"], it["voice"], int(it["speed"]), pitch=int(it["pitch"])) for it in chosen]
            out.append(Recording(f"{group}_{k}", group, _join(parts, rng, SYNTH_SNR_DB), tuple(label(it["text"]) for it in chosen),
                                 tuple(it["voice"] for it in chosen)))
    return out


def real_recordings(seed: int = 0) -> list[Recording]:
    """The speech recordings of assets/audio (up to MAX_REAL_CLIP_S), CLIPS_PER_RECORDING at a time."""
    clips = [c for c in real_clips() if c.duration_s <= MAX_REAL_CLIP_S]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(0, len(clips), CLIPS_PER_RECORDING):
        group = clips[k:k + CLIPS_PER_RECORDING]
        out.append(Recording(f"real_{k // CLIPS_PER_RECORDING}", "real", _join([c.audio for c in group], rng, REAL_SNR_DB),
                             tuple(label(c.reference) for c in group), tuple(c.name for c in group)))
    return out


def recordings(which: str, count: int = 6) -> list[Recording]:
    """synthetic | real | all."""
    out: list[Recording] = []
    if which in ("synthetic", "all"):
        out += synthetic_recordings(count)
    if which in ("real", "all"):
        out += real_recordings()
    return out


def stream_finals(model, audio: np.ndarray, config: Config | None = None) -> tuple[list[FinalEvent], float]:
    """The finals of `audio` fed to a fresh Recognizer in 20 ms blocks, and the compute seconds spent."""
    finals, rec = stream_recognizer(model, audio, config)
    return finals, rec.compute_s


def stream_recognizer(model, audio: np.ndarray, config: Config | None = None):
    from streamer.core.recognizer import Recognizer
    from streamer.model.silero import load_silero

    if hasattr(model, "reset"):
        model.reset()
    rec = Recognizer(model, config or Config(), silero=load_silero)
    events = []
    for i in range(0, len(audio), BLOCK_SAMPLES):
        events += rec.feed(AudioChunk(i, np.ascontiguousarray(audio[i:i + BLOCK_SAMPLES]), MODEL_SAMPLE_RATE))
    events += rec.finish()
    return [e for e in events if isinstance(e, FinalEvent)], rec


def streamed_text(model, audio: np.ndarray, config: Config | None = None) -> str:
    return " ".join(f.text for f in stream_finals(model, audio, config)[0] if f.text)


def offline_text(ctc, audio: np.ndarray) -> str:
    """The offline decode of the whole recording (processor, one forward pass, argmax, batch_decode)."""
    from streamer.model.reference import reference_text

    return " ".join(reference_text(ctc.model, ctc.processor, audio).split())


def error_rates(reference: list[str], hypothesis: list[str]) -> dict[str, float]:
    """CER and WER over all recordings (summed edits over summed reference length, jiwer)."""
    import jiwer

    refs = [r or "-" for r in reference]
    return {"cer": float(jiwer.cer(refs, hypothesis)), "wer": float(jiwer.wer(refs, hypothesis))}


def measure(ctc, recs: list[Recording], config: Config, offline: list[str] | None = None,
            label_: str = "") -> dict:
    """Streamed vs offline vs truth for one model / configuration over `recs`, per group and in all."""
    t0 = time.perf_counter()
    offline = offline if offline is not None else [offline_text(ctc, r.audio) for r in recs]
    streamed, compute, early = [], 0.0, [0, 0]
    for r in recs:
        finals, rec = stream_recognizer(ctc, r.audio, config)
        streamed.append(" ".join(f.text for f in finals if f.text))
        compute += rec.compute_s
        early[0] += rec.early_passes
        early[1] += rec.early_passes_used
    audio_s = sum(r.duration_s for r in recs)
    row: dict = {"label": label_, "recordings": len(recs), "audio_s": round(audio_s, 1),
                 "streamed_rtf": round(compute / audio_s, 4) if audio_s else None,
                 "wall_s": round(time.perf_counter() - t0, 1), "final_pass_silence_ms": config.window.final_pass_silence_ms,
                 "final_pass_early": config.window.final_pass_early, "final_pass_max_s": config.window.final_pass_max_s,
                 "early_passes": early[0], "early_passes_used": early[1]}
    for group in ["all"] + sorted({r.group for r in recs}):
        idx = [i for i, r in enumerate(recs) if group == "all" or r.group == group]
        truth = [recs[i].truth for i in idx]
        s = [streamed[i] for i in idx]
        o = [offline[i] for i in idx]
        vs = error_rates(o, s)
        st, ot = error_rates(truth, s), error_rates(truth, o)
        row[group] = {"recordings": len(idx), "streamed_vs_offline_cer": vs["cer"], "streamed_vs_offline_wer": vs["wer"],
                      "streamed_cer": st["cer"], "streamed_wer": st["wer"], "offline_cer": ot["cer"],
                      "offline_wer": ot["wer"]}
    row["_texts"] = [{"name": r.name, "truth": r.truth, "offline": o, "streamed": s}
                     for r, o, s in zip(recs, offline, streamed)]
    return row


#: The context study: each VAD segment decoded alone with one change to its input (name, pre-roll extra s,
#: silence after its end s, left context s (None: all of the recording before it), whole-recording statistics).
STUDY = [("segment (the final pass input)", 0.0, 0.0, 0.0, False), ("+ 150 ms after", 0.0, 0.15, 0.0, False),
         ("+ 300 ms after", 0.0, 0.3, 0.0, False), ("+ 1 s after", 0.0, 1.0, 0.0, False),
         ("pre-roll + 300 ms", 0.3, 0.0, 0.0, False), ("whole-recording statistics", 0.0, 0.0, 0.0, True),
         ("+ 1 s before", 0.0, 0.0, 1.0, False), ("+ 3 s before", 0.0, 0.0, 3.0, False),
         ("+ all before", 0.0, 0.0, None, False)]


def context_study(ctc, recs: list[Recording], config: Config, offline: list[str]) -> list[dict]:
    """Where streamed finals and the whole-recording decode part: each VAD segment of each recording
    decoded alone (the final pass's input, on its frame grid) with one change at a time (STUDY); only the
    segment's own frames are decoded, the context is there for the model to see."""
    from streamer.bench.metrics import vad_segments
    from streamer.core.decoding import GreedyDecoder
    from streamer.model.reuse import NORM_EPS, NormStats

    g = ctc.geometry
    decoder = GreedyDecoder(ctc.vocabulary, g.frame_s)
    stride = g.stride_samples
    texts: dict[str, list[str]] = {name: [] for name, *_ in STUDY}
    for r in recs:
        whole = NormStats(float(r.audio.mean()), float(np.sqrt(r.audio.var() + NORM_EPS)))
        segments = vad_segments(r.audio, config.vad, BLOCK_SAMPLES)
        for name, pre_s, after_s, before_s, whole_stats in STUDY:
            out = []
            for seg in segments:
                first = -(-seg.start_sample // stride) * stride
                start = max(0, first - int(pre_s * MODEL_SAMPLE_RATE)) // stride * stride
                before = first if before_s is None else int(before_s * MODEL_SAMPLE_RATE)
                context_start = max(0, start - before) // stride * stride
                end = min(len(r.audio), seg.end_sample + int(after_s * MODEL_SAMPLE_RATE))
                logits = ctc.forward(ctc.normalize(r.audio[context_start:end], whole if whole_stats else None))
                out.append(decoder.decode_logits(logits[(start - context_start) // stride:]))
            texts[name].append(" ".join(t for t in out if t))
    truth = [r.truth for r in recs]
    rows = []
    for name, outs in texts.items():
        vs, t = error_rates(offline, outs), error_rates(truth, outs)
        rows.append({"input": name, "vs_offline_cer": vs["cer"], "vs_offline_wer": vs["wer"], "vs_truth_cer": t["cer"],
                     "vs_truth_wer": t["wer"], "recordings": len(recs)})
    return rows


def part_multi_utterance(args, config: Config) -> dict:
    """`streamer bench --multi-utterance`: the demo model (or --model) on the multi-utterance recordings, at the
    configuration given (and, with --stitched, with the final pass off)."""
    from dataclasses import replace

    from streamer.bench.cli import say
    from streamer.bench.suite import load

    key = args.model
    recs = recordings(args.multi_utterance, args.multi_utterance_count)
    say(f"multi-utterance: {len(recs)} recordings, {sum(r.duration_s for r in recs):.0f} s ({args.multi_utterance}), model {key}")
    ctc = load(key, config.model)
    float32 = not ctc.quantized and str(ctc.dtype) == "torch.float32"  # the offline decode is float32, as --offline
    plain = ctc if float32 else load(key, replace(config.model, quantize=False, dtype="float32"))
    offline = [offline_text(plain, r.audio) for r in recs]
    rows = [measure(ctc, recs, config, offline, "default" if config.window.final_pass_max_s > 0 else "final pass off")]
    if args.stitched and config.window.final_pass_max_s > 0:
        say("multi-utterance: again with the final pass off (stitched windows alone) ...")
        rows.append(measure(ctc, recs, replace(config, window=replace(config.window, final_pass_max_s=0.0)), offline,
                            "final pass off"))
    for r in rows:
        r.update(model=key, set=args.multi_utterance)
    out: dict = {"multi_utterance": rows}
    if args.multi_utterance_study:
        say("multi-utterance: the context study (each segment decoded alone, one change at a time) ...")
        for group in sorted({r.group for r in recs}):
            idx = [i for i, r in enumerate(recs) if r.group == group]
            for row in context_study(plain, [recs[i] for i in idx], config, [offline[i] for i in idx]):
                out.setdefault("multi_utterance_study", []).append(dict(row, model=key, group=group))
    return out


def render(rows: list[dict]) -> str:
    lines = ["| model | set | run | group | recordings | streamed vs offline CER | WER | streamed CER / WER vs truth | "
             "offline CER / WER vs truth |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for group, g in ((k, v) for k, v in r.items() if isinstance(v, dict)):
            lines.append(f"| {r.get('model')} | {r.get('set')} | {r['label']} | {group} | {g['recordings']} | "
                         f"{g['streamed_vs_offline_cer']:.2%} | {g['streamed_vs_offline_wer']:.2%} | "
                         f"{g['streamed_cer']:.2%} / {g['streamed_wer']:.2%} | {g['offline_cer']:.2%} / {g['offline_wer']:.2%} |")
    return "\n".join(lines)


def render_study(rows: list[dict]) -> str:
    lines = ["| model | group | segment input | vs offline CER / WER | vs truth CER / WER |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['group']} | {r['input']} | {r['vs_offline_cer']:.2%} / {r['vs_offline_wer']:.2%} | "
              f"{r['vs_truth_cer']:.2%} / {r['vs_truth_wer']:.2%} |" for r in rows]
    return "\n".join(lines)


def write_texts(rows: list[dict], path: Path) -> None:
    import json

    path.write_text(json.dumps({r["label"]: r["_texts"] for r in rows}, indent=1), encoding="utf-8")
