"""Cross-stream batching: the windows that are due across all streams go through the network as one batch.

Every stream's worker thread calls its `ModelView.logits` as before (Session, Worker and Recognizer do not
change); with a scheduler the view hands the window to `BatchScheduler.submit` and waits on the future. One
scheduler thread takes turns with the model:

- **When**: as soon as the model is free it takes what is queued (with `wait_s` > 0 it first waits until
  `max_batch` windows are queued or the oldest has waited `wait_s`, never longer). A lone window runs at once.
- **Which**: the oldest queued window picks the batch: it and the windows that may share its pass
  (`CTCModel.batch_key`: the same length for models without an attention mask, whose first-layer group norm
  spans the whole input; any length for attention-mask models, padded and masked, as long as the padding
  stays under `max_pad`), oldest first, at most `max_batch`. Each worker waits for its window before it asks
  for the next, so a stream has at most one window queued: a stream flooding faster than real time gets one
  row per batch like every other, and a window waits at most for the batches of the windows queued before
  it (oldest first: none starves). Final passes over whole utterances batch by the same rule (equal lengths
  only, for group-norm models: in practice alone).
- **What**: `CTCModel.logits_batch`: each stream's own feature-reuse state prepares its row, one forward
  pass, each row cut back to its window (equal to one pass per window within float tolerance; int8 dynamic
  quantisation picks its activation scale per call, so there batched rows differ by quantisation noise).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from streamer.errors import ConfigError
from streamer.model.inference import CTCModel, ModelView, WindowRequest

log = logging.getLogger("streamer.server.batching")


@dataclass(frozen=True)
class BatchOptions:
    #: Windows in one forward pass at most.
    max_batch: int = 16
    #: How long the scheduler may hold a batch back for more windows once one is queued (0: never; the
    #: batch is what is queued when the model is free).
    wait_ms: float = 0.0
    #: Attention-mask models: a batch's longest window at most this many times its shortest (padding is
    #: computed and thrown away).
    max_pad: float = 1.5

    def validate(self) -> BatchOptions:
        if self.max_batch < 1:
            raise ConfigError(f"--batch-max must be at least 1, not {self.max_batch}")
        if not (0.0 <= self.wait_ms <= 1000.0):
            raise ConfigError(f"--batch-wait-ms must be within 0..1000, not {self.wait_ms}")
        if not self.max_pad >= 1.0:
            raise ConfigError(f"max_pad must be at least 1, not {self.max_pad}")
        return self


@dataclass
class _Queued:
    request: WindowRequest
    future: Future[np.ndarray]
    since: float
    seq: int


@dataclass
class BatchStats:
    batches: int = 0
    windows: int = 0
    busy_s: float = 0.0
    sizes: Counter[int] = field(default_factory=Counter)
    max_queue_wait_s: float = 0.0

    def summary(self) -> str:
        mean = self.windows / self.batches if self.batches else 0.0
        return (f"{self.windows} windows in {self.batches} batches (mean {mean:.2f}, largest "
                f"{max(self.sizes) if self.sizes else 0}), model busy {self.busy_s:.1f} s, longest wait in queue "
                f"{self.max_queue_wait_s * 1000:.0f} ms")


class BatchScheduler:
    """One thread that runs the queued windows of all streams through `ctc` in batches (module notes)."""

    def __init__(self, ctc: CTCModel, options: BatchOptions | None = None,
                 clock=time.monotonic) -> None:
        self.ctc = ctc
        self.options = (options or BatchOptions()).validate()
        self.stats = BatchStats()
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: list[_Queued] = []
        self._seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    def view(self) -> ModelView:
        """A stream's model handle whose windows go through this scheduler."""
        return self.ctc.view(self)

    def submit(self, request: WindowRequest) -> Future[np.ndarray]:
        """Queue one stream's window; the future gets its logits (or the model call's exception)."""
        with self._cond:
            return self._submit_locked(request)

    def _submit_locked(self, request: WindowRequest) -> Future[np.ndarray]:
        future: Future[np.ndarray] = Future()
        if self._closed:
            future.set_exception(RuntimeError("the batch scheduler has stopped"))
            return future
        self._queue.append(_Queued(request, future, self._clock(), self._seq))
        self._seq += 1
        self._cond.notify_all()
        return future

    def close(self) -> None:
        """Stop the thread; windows still queued fail (their streams are being stopped anyway)."""
        with self._cond:
            self._closed = True
            left, self._queue = self._queue, []
            self._cond.notify_all()
        for q in left:
            q.future.set_exception(RuntimeError("the batch scheduler has stopped"))
        self._thread.join(timeout=30)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the scheduler thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[_Queued] | None:
        opts = self.options
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if opts.wait_ms > 0:  # the latency budget: hold the batch back at most wait_ms past the oldest
                deadline = self._queue[0].since + opts.wait_ms / 1000.0
                while len(self._queue) < opts.max_batch and not self._closed:
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self.closed:
                    return None
            batch = self.pick(self._queue)
            chosen = {id(q) for q in batch}
            self._queue = [q for q in self._queue if id(q) not in chosen]
            return batch

    def pick(self, queue: list[_Queued]) -> list[_Queued]:
        """The oldest window and those that may share its pass, oldest first (queue is in arrival order)."""
        head = queue[0]
        key = self.ctc.batch_key(head.request)
        if key is None:
            return [head]
        batch = [head]
        shortest = longest = len(head.request.audio)
        for q in queue[1:]:
            if len(batch) >= self.options.max_batch:
                break
            if self.ctc.batch_key(q.request) != key:
                continue
            n = len(q.request.audio)
            lo, hi = min(shortest, n), max(longest, n)
            if hi > self.options.max_pad * lo:
                continue
            batch.append(q)
            shortest, longest = lo, hi
        return batch

    def _execute(self, batch: list[_Queued]) -> None:
        now = self._clock()
        st = self.stats
        st.max_queue_wait_s = max(st.max_queue_wait_s, max(now - q.since for q in batch))
        t0 = time.perf_counter()
        try:
            with self.ctc.lock:
                results = self.ctc.logits_batch([q.request for q in batch])
        except BaseException as exc:  # every waiting worker learns of it (its session reports it)
            log.debug("batched model call failed", exc_info=True)
            for q in batch:
                q.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        st.busy_s += time.perf_counter() - t0
        st.batches += 1
        st.windows += len(batch)
        st.sizes[len(batch)] += 1
        for q, out in zip(batch, results):
            q.future.set_result(out)
