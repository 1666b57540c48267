"""Streaming resampling to the model rate with soxr, plus mono mix-down."""

from __future__ import annotations

import numpy as np
import soxr


def to_mono(block: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) float32, channels averaged."""
    block = np.asarray(block, dtype=np.float32)
    if block.ndim == 1:
        return block
    if block.ndim != 2:
        raise ValueError(f"expected audio of shape (frames,) or (frames, channels), got {block.shape}")
    return block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]


def zero_nonfinite(block: np.ndarray) -> tuple[np.ndarray, int]:
    """`block` with NaN and +-Inf samples replaced by zeros, and how many there were. One such sample would
    otherwise spread through the resampler and the model's normalisation and erase a whole utterance."""
    finite = np.isfinite(block)
    if finite.all():
        return block, 0
    return np.where(finite, block, np.float32(0.0)).astype(np.float32), int(block.size - np.count_nonzero(finite))


class StreamingResampler:
    """Resamples mono float32 blocks of any size; the output over all blocks plus `flush()` equals the
    one-shot resampling of the concatenated input (soxr keeps the filter state across calls).

    This is where every source's audio enters the 16 kHz path (capture, files), so non-finite samples are
    zeroed here, before the mix-down, and counted in `nonfinite_samples` (sample values, over all channels)."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._passthrough = in_rate == out_rate
        self._stream = None if self._passthrough else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        self.samples_in = 0
        self.nonfinite_samples = 0

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block, bad = zero_nonfinite(np.asarray(block, dtype=np.float32))
        self.nonfinite_samples += bad
        block = np.ascontiguousarray(to_mono(block))
        self.samples_in += len(block)
        out = block.copy() if self._stream is None else self._stream.resample_chunk(block, last=last)
        out = np.asarray(out, dtype=np.float32)
        return out

    def flush(self) -> np.ndarray:
        return self.process(np.zeros(0, dtype=np.float32), last=True)
