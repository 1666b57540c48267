"""What every audio source offers the application (streamer.app.Session): the microphone, the file replay
and the benchmark's paced replay all write 16 kHz mono audio into a ring buffer from a thread of their own,
and close the ring when they stop, so the worker drains what is left and finishes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from streamer.audio.ringbuffer import RingBuffer


class Source(Protocol):
    #: "live" (a device), "realtime" (a file paced like a device) or "fast" (a file as fast as the worker reads).
    mode: str

    @property
    def error(self) -> BaseException | None:
        """Set when the source failed or lost its device (a StreamerError for the user, or any exception)."""
        ...

    def start(self) -> None:
        """Open the device or file and start delivering audio (raises a StreamerError when it cannot)."""
        ...

    def close(self) -> None:
        """Stop delivering, move what was captured into the ring and close it; idempotent."""
        ...

    def dropped_samples(self) -> int:
        """16 kHz samples the source lost before they reached the ring (its own queue was full)."""
        ...

    def input_overflows(self) -> int:
        """Overflows the device reported (audio lost before it reached streamer)."""
        ...

    def nonfinite_samples(self) -> int:
        """NaN / Inf input samples replaced with zeros where the audio entered the 16 kHz path."""
        ...

    @property
    def total_samples(self) -> int | None:
        """16 kHz samples the source will deliver in all, where known (files); None for a device."""
        ...


#: Builds a source writing into the session's ring buffer, stopping when the session's stop event is set.
SourceFactory = Callable[[RingBuffer, threading.Event], Source]
