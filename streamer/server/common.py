"""What both protocols share: the limits, admission (--max-sessions, --token), and a Stream: one Session over
one model view, fed by a PushSource, its events handed to the connection through a bounded EventBridge.

Threads: each Stream's Session has its worker thread (the same pipeline as the CLI: ring -> worker ->
Recognizer), which calls the model view under the model's FairLock (all streams meet the model there, one
window at a time). The worker only ever appends to its EventBridge (a lock and a bounded deque): it never
waits for a client. The connection's coroutine (asyncio) pushes audio and reads the bridge; a client that
does not read blocks only its own coroutine (writes time out after the idle timeout). Stopping a Session
joins its threads, so it runs on the server's executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from streamer.app.session import Session, SessionOptions
from streamer.audio.push import PushSource
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import MODEL_SAMPLE_RATE, Config
from streamer.core.events import Event, FinalEvent, PartialEvent
from streamer.core.recognizer import FinalRescorer, FrameModel
from streamer.errors import ConfigError

log = logging.getLogger("streamer.server")

#: How often a connection waiting for room in its ring buffer looks again (backpressure on a fast client).
ROOM_POLL_S = 0.01


@dataclass(frozen=True)
class Limits:
    #: Connections served at once (each holds one session); one more is refused with a reason.
    max_sessions: int = 8
    #: Largest message a client may send (a WebSocket message; a Wyoming event's data + payload), bytes.
    max_message_bytes: int = 1 << 20
    #: A connection that sends nothing (or reads nothing we send) this long is closed.
    idle_timeout_s: float = 60.0
    #: Shared secret the clients must present; None: no token needed.
    token: str | None = field(default=None, repr=False)
    #: Finals a connection may have waiting to be sent; more are dropped (counted) rather than held forever.
    max_pending_finals: int = 256

    def validate(self) -> Limits:
        if self.max_sessions < 1:
            raise ConfigError(f"--max-sessions must be at least 1, not {self.max_sessions}")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"--max-message-bytes must be at least 1024, not {self.max_message_bytes}")
        if not (math.isfinite(self.idle_timeout_s) and self.idle_timeout_s > 0):
            raise ConfigError(f"--idle-timeout-s must be positive, not {self.idle_timeout_s}")
        if self.token is not None and not self.token:
            raise ConfigError("--token is empty", "give a shared secret, or leave --token out")
        return self


def parse_endpoint(uri: str, scheme: str, flag: str) -> tuple[str, int]:
    """'tcp://HOST:PORT' (scheme tcp) or 'ws://HOST:PORT' -> (host, port); no host: 127.0.0.1."""
    parsed = urlparse(uri if "://" in uri else f"{scheme}://{uri}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != scheme or port is None:
        raise ConfigError(f"{flag} {uri!r} is not {scheme}://HOST:PORT", f"e.g. {flag} {scheme}://127.0.0.1:"
                          f"{10300 if scheme == 'tcp' else 2700}")
    return parsed.hostname or "127.0.0.1", port


class EventBridge:
    """The worker's events for one connection: the latest partial (older ones are replaced: counted in
    `partials_replaced`) and the finals in order (at most `max_finals` waiting; more are dropped and counted
    in `finals_dropped`). Called on the worker thread; read on the event loop."""

    def __init__(self, max_finals: int) -> None:
        self._lock = threading.Lock()
        self._finals: deque[FinalEvent] = deque()
        self._partial: PartialEvent | None = None
        self._partial_new = False
        self.max_finals = max_finals
        self.partials = 0
        self.partials_replaced = 0
        self.finals_dropped = 0
        self.first_partial_wall: float | None = None

    def handle(self, event: Event) -> None:
        """A Worker event handler; never raises, never blocks on the client."""
        with self._lock:
            if isinstance(event, PartialEvent):
                self.partials += 1
                if self._partial_new:
                    self.partials_replaced += 1
                self._partial, self._partial_new = event, True
            elif isinstance(event, FinalEvent):
                if self._partial is not None and self._partial.segment_id == event.segment_id:
                    self._partial, self._partial_new = None, False
                if len(self._finals) >= self.max_finals:
                    self.finals_dropped += 1
                    log.warning("a client is not reading its transcripts: a final was dropped")
                    return
                self._finals.append(event)

    def take_final(self) -> FinalEvent | None:
        with self._lock:
            return self._finals.popleft() if self._finals else None

    def take_finals(self) -> list[FinalEvent]:
        with self._lock:
            out = list(self._finals)
            self._finals.clear()
            return out

    def partial(self) -> PartialEvent | None:
        """The latest partial of the utterance in progress (None between utterances)."""
        with self._lock:
            self._partial_new = False
            return self._partial


class SharedRescorer:
    """One finals rescorer (LM beam search) for every stream of a server: calls are serialised, as one
    pyctcdecode decoder is not documented to be safe across threads; a final waits at most for another
    stream's beam search (tens of ms)."""

    def __init__(self, inner: FinalRescorer) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def __call__(self, logits: np.ndarray) -> str:
        with self._lock:
            return self.inner(logits)


class StreamError(Exception):
    """A stream that cannot go on (its pipeline failed, or it stalled): told to the client, then closed."""


class Stream:
    """One transcription: a Session over `model` fed by pushed PCM. `push` waits (asynchronously) for room in
    the ring instead of dropping audio, so a client faster than real time is slowed, never truncated."""

    def __init__(self, model: FrameModel, config: Config, executor: Executor, rate: int, width: int, channels: int,
                 max_finals: int = 256, clock: Callable[[], float] = time.time,
                 final_rescorer: FinalRescorer | None = None) -> None:
        self.bridge = EventBridge(max_finals)
        self.executor = executor
        self._stopped = False
        made: list[PushSource] = []

        def factory(ring: RingBuffer, stop: threading.Event) -> PushSource:
            made.append(PushSource(ring, stop, rate, width, channels))
            return made[0]

        self.session = Session(model, factory, SessionOptions(config), handlers=[self.bridge.handle], clock=clock,
                               final_rescorer=final_rescorer)
        self.source: PushSource = made[0]
        self.session.start()

    @property
    def format(self) -> tuple[int, int, int]:
        return self.source.rate, self.source.width, self.source.channels

    def set_format(self, rate: int, width: int, channels: int) -> None:
        self.source.set_format(rate, width, channels)

    async def push(self, data: bytes, timeout_s: float) -> None:
        """Write one block, first waiting up to `timeout_s` for the worker to make room for it."""
        rate, width, channels = self.format
        need = int(len(data) / (width * channels) * MODEL_SAMPLE_RATE / rate) + 64
        need = min(need, self.source.ring.capacity)
        deadline = time.monotonic() + timeout_s
        while self.source.room() < need:
            if self.session.finished.is_set():
                raise StreamError("the transcription pipeline stopped")
            if time.monotonic() > deadline:
                raise StreamError("the server could not keep up with this stream")
            await asyncio.sleep(ROOM_POLL_S)
        self.source.push(data)

    async def finish(self) -> list[FinalEvent]:
        """End of audio: the utterance in progress is finalised; returns the finals not yet taken."""
        self.source.finish()
        await self._stop()
        try:
            self.session.raise_errors()
        except Exception as exc:
            log.error("a stream failed: %s", type(exc).__name__)
            log.debug("stream failure", exc_info=True)
            raise StreamError("transcription failed on the server") from exc
        return self.bridge.take_finals()

    async def abort(self) -> None:
        """The client is gone: stop the session and join its threads (the finals are discarded)."""
        self.session.request_stop()
        await self._stop()

    async def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await asyncio.get_running_loop().run_in_executor(self.executor, self.session.stop)

    def summary(self) -> str:
        """For the log: amounts only (no audio, no text)."""
        b = self.bridge
        return (f"{self.session.processed_s:.1f} s of audio, {b.partials} partials ({b.partials_replaced} replaced "
                f"before they were sent), {b.finals_dropped} finals dropped, {self.session.dropped_samples()} "
                "samples dropped")


class Admission:
    """--max-sessions and --token, shared by both protocols."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self.active = 0
        self.served = 0
        self.refused = 0

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.limits.max_sessions:
                self.refused += 1
                return False
            self.active += 1
            self.served += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def busy_reason(self) -> str:
        return f"server busy: {self.limits.max_sessions} sessions already (--max-sessions); try again later"

    def token_ok(self, given: object) -> bool:
        expected = self.limits.token
        if expected is None:
            return True
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
