"""Audio files and streams, opened once and read as a stream, mixed to mono and resampled to 16 kHz with the
streaming resampler, so file replay feeds the pipeline exactly like capture.

Inputs (`open_audio`):
- a regular file: anything soundfile reads (WAV, FLAC, OGG ...), at any rate and channel count;
- standard input (`-`), a FIFO or another pipe: WAV, read as it arrives (`ffmpeg -i talk.mp3 -f wav - |
  streamer --file -`), or raw PCM with `raw=RawFormat(rate, channels)` (signed 16-bit little-endian, as
  `ffmpeg -f s16le -ac 1 -ar 16000 -`); another format in a pipe (FLAC, OGG) is read to its end first.

An input is read once, from its beginning to its end: a FIFO or a pipe cannot be read twice. What was read
is kept (`frames_read`, `shortfall`): a file whose header promises more audio than it holds (truncated
WAV), that stops with a decoding error (truncated FLAC) or that lacks its end (truncated OGG) is transcribed
as far as it goes and `shortfall` says what is missing; an input with no audio at all is an AudioFileError
before anything runs. Sample rates below MIN_SAMPLE_RATE are refused (no speech survives them)."""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from streamer.audio.resample import StreamingResampler
from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.errors import AudioFileError

#: Native-rate frames read per block: 20 ms at 48 kHz, like a capture callback.
FILE_BLOCK_FRAMES = 960
#: The name of standard input as an input path.
STDIN = "-"
#: The lowest input sample rate accepted: telephone speech (8 kHz) still carries words; below it nothing does.
MIN_SAMPLE_RATE = 8000
#: WAV data sizes that mean "unknown" (written by tools that stream to a pipe and cannot seek back).
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_WAV_STREAMING_SIZE_MIN = 0x7FFF0000
_FORMATS_HINT = "pass a WAV, FLAC or OGG file, or WAV / raw PCM (--raw-rate) on standard input"


@dataclass(frozen=True)
class RawFormat:
    """Headerless PCM input: signed 16-bit little-endian samples, interleaved channels."""

    sample_rate: int
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        return 2 * self.channels


@dataclass(frozen=True)
class AudioFileInfo:
    path: Path
    sample_rate: int
    channels: int
    #: Frames the input holds, or None for a stream of unknown length (a pipe).
    frames: int | None
    #: How the input is named to the user ("standard input" for -).
    name: str = ""

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate

    @property
    def label(self) -> str:
        return self.name or str(self.path)


def _describe_error(exc: BaseException) -> str:
    """The useful last line of a libsndfile / OS message, without its "System error." boilerplate."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    if text.startswith("Error opening"):
        text = text.rsplit(": ", 1)[-1]
    if text.rstrip(".").lower() in ("system error", "unspecified internal error"):
        return "the data could not be decoded"
    return text


def _check_rate(rate: int, name: str) -> None:
    if rate < MIN_SAMPLE_RATE:
        raise AudioFileError(f"{name} is sampled at {rate} Hz, below the {MIN_SAMPLE_RATE} Hz that speech needs",
                             "resample it to 16000 Hz (e.g. sox IN -r 16000 OUT.wav), or check "
                             "the file's header")


class AudioInput:
    """One audio input, opened once: `info` is known on opening, and the first block is already decoded
    (so an input that cannot be decoded fails before anything else runs). `blocks()` yields float32
    (frames, channels) blocks once; `iter_16k()` resampled to 16 kHz mono."""

    def __init__(self, info: AudioFileInfo, reader: Iterator[np.ndarray], expected_frames: int | None,
                 closer: Callable[[], None] | None = None, cut_off: str | None = None) -> None:
        self.info = info
        #: Why the container says it is incomplete before it is read (an OGG stream without its last page).
        self.cut_off = cut_off
        self.frames_read = 0
        #: Frames the header promised (None: not known); for a shortfall message.
        self.expected_frames = expected_frames
        #: Set when the input ended before its header said it would, or a decoding error stopped it.
        self.shortfall: str | None = None
        self._reader = reader
        self._closer = closer
        self._consumed = False
        try:
            first = next(reader, None)
        except Exception as exc:
            self.close()
            raise AudioFileError(f"cannot decode {info.label}: {_describe_error(exc)}", _FORMATS_HINT) from exc
        if first is None or len(first) == 0:
            self.close()
            if expected_frames or cut_off:
                why = cut_off or f"its header promises {self._seconds(expected_frames or 0)}"
                raise AudioFileError(f"cannot decode any audio from {info.label} ({why})",
                                     "the file is truncated or damaged")
            raise AudioFileError(f"audio file is empty: {info.label}", "pass a file that holds audio")
        self._first: np.ndarray | None = first

    def blocks(self) -> Iterator[np.ndarray]:
        """Every block of the input, once. A decoding error after the first block ends the input (what
        was read stays) and is kept in `shortfall`; so is an input that ended before its header's length."""
        if self._consumed:
            raise RuntimeError(f"{self.info.label} was already read (an input is read once)")
        self._consumed = True
        try:
            if self._first is not None:
                first, self._first = self._first, None
                self.frames_read += len(first)
                yield first
            while True:
                try:
                    block = next(self._reader, None)
                except Exception as exc:  # a decoding error mid-file: stop there, keep what was read
                    self.shortfall = (f"reading {self.info.label} stopped at {self._seconds(self.frames_read)} of "
                                      f"{self._expected_text()}: {_describe_error(exc)}")
                    return
                if block is None or len(block) == 0:
                    break
                self.frames_read += len(block)
                yield block
            if self.expected_frames is not None and self.frames_read < self.expected_frames:
                self.shortfall = (f"{self.info.label} is truncated: {self._seconds(self.frames_read)} of audio "
                                  f"read of the {self._seconds(self.expected_frames)} its header promises")
            elif self.cut_off:
                self.shortfall = (f"{self.info.label} is truncated ({self.cut_off}): "
                                  f"{self._seconds(self.frames_read)} of audio read")
        finally:
            self.close()

    def iter_16k(self, resampler: StreamingResampler | None = None) -> Iterator[np.ndarray]:
        """16 kHz mono float32 blocks, resampled as a stream (nothing lost at block edges). Pass a
        `resampler` (for the input's rate) to read its counters (non-finite samples zeroed) afterwards."""
        if resampler is None:
            resampler = StreamingResampler(self.info.sample_rate, MODEL_SAMPLE_RATE)
        elif resampler.in_rate != self.info.sample_rate:
            raise ValueError(f"resampler for {resampler.in_rate} Hz, input at {self.info.sample_rate} Hz")
        for block in self.blocks():
            out = resampler.process(block)
            if len(out):
                yield out
        tail = resampler.flush()
        if len(tail):
            yield tail

    def read_16k(self) -> np.ndarray:
        blocks = list(self.iter_16k())
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        if self._closer is not None:
            closer, self._closer = self._closer, None
            try:
                closer()
            except Exception:
                pass

    def _seconds(self, frames: int) -> str:
        return f"{frames / self.info.sample_rate:.2f} s"

    def _expected_text(self) -> str:
        return self._seconds(self.expected_frames) if self.expected_frames is not None else "an unknown length"


# -- opening -----------------------------------------------------------------------------------------------
def open_audio(path: str | Path, raw: RawFormat | None = None, block_frames: int = FILE_BLOCK_FRAMES) -> AudioInput:
    """Open an audio input once ("-" is standard input); one AudioFileError line for what cannot be used."""
    if str(path) == STDIN:
        return _open_stream(sys.stdin.buffer, Path(STDIN), "standard input", raw, block_frames, close=False)
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AudioFileError(f"audio file not found: {p}", "check the path") from None
    except OSError as exc:
        raise AudioFileError(f"cannot open audio file {p}: {exc.strerror}", "check the path and its permissions") from exc
    if stat.S_ISDIR(st.st_mode):
        raise AudioFileError(f"{p} is a folder, not an audio file", "pass a WAV, FLAC or OGG file")
    try:
        f = open(p, "rb")
    except OSError as exc:
        raise AudioFileError(f"cannot open audio file {p}: {exc.strerror}", "check the file's permissions") from exc
    if not stat.S_ISREG(st.st_mode):  # a FIFO, a character device: read once, as a stream
        return _open_stream(f, p, str(p), raw, block_frames, close=True)
    if raw is not None:
        frames = st.st_size // raw.frame_bytes
        return _raw_input(f, p, str(p), raw, block_frames, frames)
    return _open_soundfile(f, p, block_frames)


def _open_soundfile(f: BinaryIO, p: Path, block_frames: int) -> AudioInput:
    expected = _wav_expected_frames(f)
    f.seek(0)
    cut_off = _ogg_cut_off(f)
    f.seek(0)
    try:
        snd = sf.SoundFile(f)
    except Exception as exc:  # LibsndfileError / RuntimeError with a C message ("System error." ...)
        f.close()
        raise AudioFileError(f"cannot read {p} as audio: {_describe_error(exc)}", _FORMATS_HINT) from exc

    def close() -> None:
        snd.close()
        f.close()

    rate, channels, frames = int(snd.samplerate), int(snd.channels), int(snd.frames)
    try:
        _check_rate(rate, str(p))
    except AudioFileError:
        close()
        raise
    info = AudioFileInfo(p, rate, channels, frames if frames > 0 else None, str(p))
    if expected is None and frames > 0:
        expected = frames
    return AudioInput(info, _soundfile_blocks(snd, block_frames), expected, closer=close, cut_off=cut_off)


def _ogg_cut_off(f: BinaryIO) -> str | None:
    """A complete Ogg stream ends with a page flagged end-of-stream; a truncated one does not (libsndfile
    then silently decodes less, or nothing at all)."""
    if _read_exact(f, 4) != b"OggS":
        return None
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 65536))
    tail = f.read()
    last = tail.rfind(b"OggS")
    if last < 0 or last + 27 > len(tail):
        return "its Ogg stream has no last page"
    header_type, segments = tail[last + 5], tail[last + 26]
    body = sum(tail[last + 27:last + 27 + segments]) if last + 27 + segments <= len(tail) else -1
    if not header_type & 0x04 or body < 0 or last + 27 + segments + body > len(tail):
        return "its Ogg stream has no last page"
    return None


def _soundfile_blocks(snd: sf.SoundFile, block_frames: int) -> Iterator[np.ndarray]:
    """Blocks until the decoder has no more, not until the frame count libsndfile reported: a truncated
    OGG reports 0 frames although its pages up to the cut decode fine."""
    snd.seekable = lambda: False  # soundfile clamps reads to `frames` otherwise
    while True:
        block = snd.read(block_frames, dtype="float32", always_2d=True)
        if len(block) == 0:
            return
        yield block


def _wav_expected_frames(f: BinaryIO) -> int | None:
    """Frames a RIFF/WAVE header promises (libsndfile silently shortens a truncated file to what is there)."""
    try:
        header = _read_wav_header(f, "")
    except (AudioFileError, OSError, struct.error):
        return None
    if header is None or header.data_bytes is None or header.block_align <= 0:
        return None
    return header.data_bytes // header.block_align


def _open_stream(f: BinaryIO, p: Path, name: str, raw: RawFormat | None, block_frames: int,
                 close: bool) -> AudioInput:
    if raw is not None:
        return _raw_input(f, p, name, raw, block_frames, None, close=close)
    head = _read_exact(f, 12)
    if len(head) == 0:
        raise AudioFileError(f"{name} is empty: no audio arrived", "send WAV (e.g. ffmpeg ... -f wav -) or raw PCM with --raw-rate")
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        header = _read_wav_header(f, name, head)
        if header is None:
            raise AudioFileError(f"{name} is a WAV stream without audio data", "send a complete WAV stream")
        _check_rate(header.rate, name)
        info = AudioFileInfo(p, header.rate, header.channels,
                             None if header.data_bytes is None else header.data_bytes // header.block_align, name)
        expected = info.frames
        return AudioInput(info, _wav_stream_blocks(f, header, block_frames), expected,
                          closer=f.close if close else None)
    # FLAC, OGG ... in a pipe: libsndfile needs to seek in them, so the stream is read to its end first
    data = head + f.read()
    if close:
        f.close()
    try:
        snd = sf.SoundFile(io.BytesIO(data))
    except Exception as exc:
        raise AudioFileError(f"cannot read {name} as audio: {_describe_error(exc)}",
                             "send WAV (ffmpeg ... -f wav -), or raw 16-bit PCM with --raw-rate HZ") from exc
    rate = int(snd.samplerate)
    _check_rate(rate, name)
    info = AudioFileInfo(p, rate, int(snd.channels), int(snd.frames) or None, name)
    return AudioInput(info, _soundfile_blocks(snd, block_frames), info.frames, closer=snd.close)


def _raw_input(f: BinaryIO, p: Path, name: str, raw: RawFormat, block_frames: int, frames: int | None,
               close: bool = True) -> AudioInput:
    if raw.channels < 1:
        raise AudioFileError(f"--raw-channels must be at least 1, not {raw.channels}")
    _check_rate(raw.sample_rate, f"raw input {name} (--raw-rate)")
    info = AudioFileInfo(p, raw.sample_rate, raw.channels, frames, name)
    reader = _pcm_blocks(f, "int16", raw.channels, block_frames)
    return AudioInput(info, reader, None, closer=f.close if close else None)


# -- WAV as a stream ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _WavHeader:
    rate: int
    channels: int
    sample_dtype: str  # numpy dtype of one sample: uint8, int16, int24 (special), int32, float32, float64
    block_align: int
    data_bytes: int | None  # None: unknown (streamed without a length)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_wav_header(f: BinaryIO, name: str, head: bytes | None = None) -> _WavHeader | None:
    """Parse RIFF/WAVE chunks up to the start of the data chunk, reading forward only (a pipe). Returns None
    when `f` is not a WAV file (name == "": a probe) or has no data chunk."""
    head = head if head is not None else _read_exact(f, 12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    rf64 = head[:4] == b"RF64"
    fmt: tuple[int, int, int, int, int] | None = None
    while True:
        chunk = _read_exact(f, 8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            break
        body_size = size + (size & 1)
        if cid == b"fmt ":
            body = _read_exact(f, body_size)
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, align, bits)
        else:
            _read_exact(f, body_size)
    if fmt is None:
        if name:
            raise AudioFileError(f"{name} is a WAV stream without a format chunk", "send a complete WAV stream")
        return None
    tag, channels, rate, align, bits = fmt
    kinds = {(1, 8): "uint8", (1, 16): "int16", (1, 24): "int24", (1, 32): "int32", (3, 32): "float32", (3, 64): "float64"}
    dtype = kinds.get((tag, bits))
    if name and (dtype is None or channels < 1 or align != channels * bits // 8):
        raise AudioFileError(f"{name} is a WAV stream in a format that cannot be streamed (format {tag}, {bits} bits)",
                             "send 8/16/24/32-bit integer or 32/64-bit float PCM (ffmpeg ... -f wav -)")
    unknown = rf64 or size in _WAV_UNKNOWN_SIZES or size >= _WAV_STREAMING_SIZE_MIN
    return _WavHeader(rate, channels, dtype or "", align, None if unknown else size)


def _wav_stream_blocks(f: BinaryIO, header: _WavHeader, block_frames: int) -> Iterator[np.ndarray]:
    limit = header.data_bytes
    yield from _pcm_blocks(f, header.sample_dtype, header.channels, block_frames, limit)


def _pcm_blocks(f: BinaryIO, dtype: str, channels: int, block_frames: int,
                limit_bytes: int | None = None) -> Iterator[np.ndarray]:
    """Interleaved PCM from a stream as float32 (frames, channels) blocks; a partial last frame is dropped."""
    width = {"uint8": 1, "int16": 2, "int24": 3, "int32": 4, "float32": 4, "float64": 8}[dtype]
    frame = width * channels
    left = limit_bytes
    pending = b""
    read = getattr(f, "read1", f.read)  # what has arrived, without waiting for a whole block (a live pipe)
    while left is None or left > 0:
        want = block_frames * frame - len(pending)
        if left is not None:
            want = min(want, left)
        data = read(want)
        if not data:
            return
        if left is not None:
            left -= len(data)
        data = pending + data
        usable = len(data) - len(data) % frame
        pending = data[usable:]
        if usable:
            yield _decode_pcm(data[:usable], dtype, channels)


def _decode_pcm(data: bytes, dtype: str, channels: int) -> np.ndarray:
    if dtype == "uint8":
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif dtype == "int16":
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif dtype == "int24":
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif dtype == "int32":
        x = np.frombuffer(data, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        x = np.frombuffer(data, dtype="<f4" if dtype == "float32" else "<f8").astype(np.float32)
    return x.reshape(-1, channels)


# -- the path-based helpers ----------------------------------------------------------------------------------
def probe(path: str | Path) -> AudioFileInfo:
    """Check that a file exists, is readable audio, is not empty and has a usable sample rate; one clear
    error otherwise. Opens and closes the input: for a pipe or standard input use open_audio (once)."""
    inp = open_audio(path)
    inp.close()
    return inp.info


def iter_blocks_16k(path: str | Path, block_frames: int = FILE_BLOCK_FRAMES,
                    resampler: StreamingResampler | None = None) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of the file, resampled as a stream (nothing lost at block edges).
    Pass a `resampler` (for the file's rate) to read its counters (non-finite samples zeroed) afterwards."""
    yield from open_audio(path, block_frames=block_frames).iter_16k(resampler)


def read_16k(path: str | Path) -> np.ndarray:
    """The whole file as 16 kHz mono float32: the same samples the streaming path sees."""
    return open_audio(path).read_16k()


def is_stream(path: str | Path) -> bool:
    """Standard input, a FIFO or another non-regular file (read once, as it arrives)."""
    if str(path) == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
