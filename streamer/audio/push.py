"""Audio pushed by a connection as a Source: raw PCM of any rate, sample width and channel count, converted
to 16 kHz mono (StreamingResampler: soxr, non-finite samples zeroed) and written into the session's ring.

The caller (a server connection) pushes from its own thread or event loop and never blocks here: `room()`
says how many 16 kHz samples fit before the ring would drop its oldest unread audio, so the caller can wait
for room (backpressure on a client sending faster than real time) instead of losing audio. `finish()` ends
the stream: the resampler's tail is flushed and the ring closed, so the worker drains it and finalises."""

from __future__ import annotations

import threading

import numpy as np

from streamer.audio.resample import StreamingResampler
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE

#: Sample widths in bytes: unsigned 8-bit, signed 16-, 24- and 32-bit little-endian (WAV / Wyoming PCM).
SAMPLE_WIDTHS = (1, 2, 3, 4)
#: Refused above this: a rate or channel count no client means (and that would make soxr allocate a lot).
MAX_RATE = 384_000
MAX_CHANNELS = 32


def check_format(rate: int, width: int, channels: int) -> None:
    """ValueError naming what is wrong with a PCM format."""
    if not isinstance(rate, int) or not 1000 <= rate <= MAX_RATE:
        raise ValueError(f"sample rate must be a whole number of Hz from 1000 to {MAX_RATE}, not {rate!r}")
    if width not in SAMPLE_WIDTHS or isinstance(width, bool):
        raise ValueError(f"sample width must be 1, 2, 3 or 4 bytes, not {width!r}")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be 1 to {MAX_CHANNELS}, not {channels!r}")


def pcm_to_float(data: bytes, width: int, channels: int) -> np.ndarray:
    """Whole frames of little-endian PCM -> float32 [frames, channels] in [-1, 1)."""
    if width == 1:
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    else:
        x = (np.frombuffer(data, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    return x.reshape(-1, channels)


class PushSource:
    """A Source fed by `push(pcm)`; mode "live" (audio arrives as it is spoken; the worker catches up when
    behind). The format may change between pushes (a new `set_format`): the old resampler is flushed first."""

    mode = "live"

    def __init__(self, ring: RingBuffer, stop: threading.Event, rate: int = MODEL_SAMPLE_RATE, width: int = 2,
                 channels: int = 1) -> None:
        self.ring = ring
        self.stop = stop
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._pending = b""  # the bytes of an incomplete frame, kept for the next push
        self._nonfinite = 0
        self.bytes_in = 0
        self._finished = False
        check_format(rate, width, channels)
        self.rate, self.width, self.channels = rate, width, channels
        self._resampler = StreamingResampler(rate, MODEL_SAMPLE_RATE)

    # -- the Source protocol --------------------------------------------------------------------------------
    @property
    def total_samples(self) -> int | None:
        return None

    def start(self) -> None:
        pass

    def close(self) -> None:
        """Stop taking audio and close the ring (what was pushed is still processed); idempotent."""
        self.finish()

    def dropped_samples(self) -> int:
        return 0  # what the ring lost is the ring's count

    def input_overflows(self) -> int:
        return 0

    def nonfinite_samples(self) -> int:
        return self._nonfinite + self._resampler.nonfinite_samples

    # -- the pushing side -------------------------------------------------------------------------------------
    def set_format(self, rate: int, width: int, channels: int) -> None:
        check_format(rate, width, channels)
        with self._lock:
            if (rate, width, channels) == (self.rate, self.width, self.channels):
                return
            self._flush_locked()
            self.rate, self.width, self.channels = rate, width, channels
            self._pending = b""
            self._resampler = StreamingResampler(rate, MODEL_SAMPLE_RATE)

    def room(self) -> int:
        """16 kHz samples the ring takes before it would drop unread audio."""
        return self.ring.capacity - self.ring.unread()

    def push(self, data: bytes) -> int:
        """Convert and write one block of PCM; returns the 16 kHz samples written (0 after finish())."""
        with self._lock:
            if self._finished or self.stop.is_set():
                return 0
            self.bytes_in += len(data)
            frame = self.width * self.channels
            data = self._pending + bytes(data)
            whole = len(data) - len(data) % frame
            self._pending = data[whole:]
            if not whole:
                return 0
            out = self._resampler.process(pcm_to_float(data[:whole], self.width, self.channels))
            self.ring.write(out)
            return len(out)

    def finish(self) -> None:
        """No more audio: the resampler's tail goes into the ring and the ring is closed; idempotent."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            try:
                self._flush_locked()
            finally:
                self.ring.close()

    def _flush_locked(self) -> None:
        tail = self._resampler.flush()
        self._nonfinite += self._resampler.nonfinite_samples
        self._resampler.nonfinite_samples = 0
        if len(tail):
            self.ring.write(tail)
