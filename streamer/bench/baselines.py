"""The alternatives, measured on the same audio and model as streamer.

- offline: the seeds' way and the reference for fidelity. The whole utterance (a clip) is recorded, then
  decoded: processor, one forward pass, argmax, batch_decode. Text appears when the clip has ended and the
  decode is done.
- per_segment: the wav2vec2-live way. The same VAD segments; each segment is decoded (processor, forward,
  argmax) once the VAD has reported its end (after the hangover). Text appears only then.
- hf_pipeline: the transformers ASR pipeline with chunk_length_s / stride_length_s, run on each segment
  when it ends.

Latency is computed with the same arrival clock as streamer: audio arrives at wall-clock pace; a single
worker starts a decode when its input is complete and it is free; every decode takes the compute time it
really took here (measured). Per frame: the time its text appears minus its arrival.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from streamer.bench.corpus import LONG_UTTERANCE_S, Session
from streamer.bench.metrics import SegmentTruth, fidelity, percentile_ms
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.core.windowing import FrameGeometry
from streamer.model.reference import reference_text

#: The transformers pipeline's chunking, as in its documentation for long audio with CTC models.
HF_CHUNK_LENGTH_S = 10.0
HF_STRIDE_LENGTH_S = (4.0, 2.0)
BASELINES = ("offline", "per_segment", "hf_pipeline")


@dataclass
class Job:
    """One decode: its input is complete at `ready_sample`; its text covers `frames`."""

    key: str
    ready_sample: int
    audio: np.ndarray
    frames: np.ndarray
    long: np.ndarray  # per frame: does it belong to an utterance longer than LONG_UTTERANCE_S


@dataclass
class BaselineResult:
    name: str
    texts: dict[str, str]  # by job key
    compute_s: float
    latencies_s: np.ndarray
    long_mask: np.ndarray

    def summary(self, audio_s: float, references: dict[str, str] | None = None, clip_of: dict | None = None) -> dict:
        out = {
            "system": self.name,
            "latency_p50_ms": percentile_ms(self.latencies_s, 50),
            "latency_p95_ms": percentile_ms(self.latencies_s, 95),
            "latency_long_p50_ms": percentile_ms(self.latencies_s[self.long_mask], 50),
            "rtf": round(self.compute_s / audio_s, 4) if audio_s else None,
            "compute_s": round(self.compute_s, 3),
            "decodes": len(self.texts),
        }
        if references is not None and clip_of is not None:
            joined: dict[str, list[str]] = {}
            for key, text in self.texts.items():
                joined.setdefault(clip_of[key], []).append(text)
            names = sorted(references)
            hyp = [" ".join(t for t in joined.get(n, []) if t) for n in names]
            f = fidelity([references[n] for n in names], hyp)
            out.update(fidelity_cer=f["cer"], fidelity_wer=f["wer"], identical_share=f["identical_share"])
        return out


def make_pipeline(model, processor):
    from transformers import pipeline

    device = next(model.parameters()).device
    return pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                    feature_extractor=processor.feature_extractor, device=device)


def _sync(model) -> None:
    import torch

    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def run_jobs(name: str, jobs: list[Job], decode, g: FrameGeometry) -> BaselineResult:
    free_at = 0.0
    texts, lat, longm, compute = {}, [], [], 0.0
    for job in sorted(jobs, key=lambda j: j.ready_sample):
        t0 = time.perf_counter()
        texts[job.key] = decode(job.audio)
        c = time.perf_counter() - t0
        compute += c
        start = max(free_at, job.ready_sample / MODEL_SAMPLE_RATE)
        free_at = start + c
        arrival = (job.frames * g.stride_samples + g.receptive_field_samples) / g.sample_rate
        lat.append(free_at - arrival)
        longm.append(job.long)
    return BaselineResult(name, texts, compute,
                          np.concatenate(lat) if lat else np.zeros(0), np.concatenate(longm) if longm else np.zeros(0, bool))


def _speech_frames(s: SegmentTruth, g: FrameGeometry) -> np.ndarray:
    frames = np.arange(s.frames(g).start, s.frames(g).stop)
    return frames[s.speech_mask(frames, g)]


def segment_jobs(session: Session, segments: list[SegmentTruth], g: FrameGeometry) -> list[Job]:
    jobs = []
    for s in segments:
        frames = _speech_frames(s, g)
        jobs.append(Job(f"seg{s.index}", s.detected_sample, session.audio[s.start_sample:s.end_sample], frames,
                        np.full(len(frames), s.duration_s > LONG_UTTERANCE_S)))
    return jobs


def clip_jobs(session: Session, segments: list[SegmentTruth], g: FrameGeometry) -> list[Job]:
    """Whole clips; their latency is counted on the frames of the VAD segments inside them, the same
    frames streamer and the per-segment baseline are measured on."""
    jobs = []
    for p in session.placements:
        segs = [s for s in segments if session.placement_at((s.start_sample + s.end_sample) // 2) is p]
        frames = np.concatenate([_speech_frames(s, g) for s in segs]) if segs else np.zeros(0, int)
        long = (np.concatenate([np.full(len(_speech_frames(s, g)), s.duration_s > LONG_UTTERANCE_S) for s in segs])
                if segs else np.zeros(0, bool))
        jobs.append(Job(p.clip.name, p.end_sample, p.clip.audio, frames, long))
    return jobs


def run_baseline(name: str, model, processor, session: Session, segments: list[SegmentTruth],
                 g: FrameGeometry) -> BaselineResult:
    if name == "offline":
        return run_jobs(name, clip_jobs(session, segments, g), lambda a: _timed(model, reference_text, model, processor, a), g)
    if name == "per_segment":
        return run_jobs(name, segment_jobs(session, segments, g), lambda a: _timed(model, reference_text, model, processor, a), g)
    if name == "hf_pipeline":
        asr = make_pipeline(model, processor)

        def decode(a):
            out = asr(a.copy(), chunk_length_s=HF_CHUNK_LENGTH_S, stride_length_s=HF_STRIDE_LENGTH_S)
            _sync(model)
            return out["text"]

        decode(np.zeros(MODEL_SAMPLE_RATE, np.float32))  # warm-up
        return run_jobs(name, segment_jobs(session, segments, g), decode, g)
    raise ValueError(f"unknown baseline {name!r}")


def _timed(model, fn, *args):
    out = fn(*args)
    _sync(model)
    return out
