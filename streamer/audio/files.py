"""Audio files (WAV/FLAC/OGG via soundfile): any rate and channel count, read in blocks, mixed to mono and
resampled to 16 kHz with the streaming resampler, so file replay feeds the pipeline exactly like capture."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from streamer.audio.resample import StreamingResampler
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.errors import AudioFileError

#: Native-rate frames read per block: 20 ms at 48 kHz, like a capture callback.
FILE_BLOCK_FRAMES = 960


@dataclass(frozen=True)
class AudioFileInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioFileInfo:
    """Check that a file exists, is readable audio and is not empty; one clear error otherwise."""
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"audio file not found: {p}", "check the path")
    if p.is_dir():
        raise AudioFileError(f"{p} is a folder, not an audio file", "pass a WAV, FLAC or OGG file")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError with a C message
        raise AudioFileError(f"cannot read {p} as audio: {str(exc).strip().splitlines()[-1]}",
                             "pass a WAV, FLAC or OGG file") from exc
    if info.frames <= 0:
        raise AudioFileError(f"audio file is empty: {p}", "pass a file that holds audio")
    return AudioFileInfo(p, int(info.samplerate), int(info.channels), int(info.frames))


def iter_blocks_16k(path: str | Path, block_frames: int = FILE_BLOCK_FRAMES,
                    resampler: StreamingResampler | None = None) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of the file, resampled as a stream (nothing lost at block edges).
    Pass a `resampler` (for the file's rate) to read its counters (non-finite samples zeroed) afterwards."""
    info = probe(path)
    if resampler is None:
        resampler = StreamingResampler(info.sample_rate, MODEL_SAMPLE_RATE)
    elif resampler.in_rate != info.sample_rate:
        raise ValueError(f"resampler for {resampler.in_rate} Hz, file at {info.sample_rate} Hz")
    try:
        with sf.SoundFile(str(info.path)) as f:
            for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                out = resampler.process(block)
                if len(out):
                    yield out
    except AudioFileError:
        raise
    except Exception as exc:
        raise AudioFileError(f"error while reading {info.path}: {exc}", "the file may be truncated or corrupt") from exc
    tail = resampler.flush()
    if len(tail):
        yield tail


def read_16k(path: str | Path) -> np.ndarray:
    """The whole file as 16 kHz mono float32: the same samples the streaming path sees."""
    blocks = list(iter_blocks_16k(path))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
