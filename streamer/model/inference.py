"""Running a loaded CTC model on windows of 16 kHz audio: input normalisation as the processor does it,
attention masks only for models that expect them, the frame grid read from the model's config, warm-up.
Feature reuse across overlapping windows is in streamer.model.reuse."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from streamer.core.config import LONG_PASS_MIN_S, MODEL_SAMPLE_RATE, ModelConfig
from streamer.core.decoding import Vocabulary
from streamer.core.windowing import FrameGeometry
from streamer.errors import ModelLoadError
from streamer.model.passfeatures import PassFeatures
from streamer.model.reuse import NORM_EPS, FeatureReuse, NormStats, ReuseCounters, ReuseStep
from streamer.model.runtime import ThreadTuner, release_free_memory

#: Audio used for the warm-up pass (long enough to hit every kernel the windows will use).
WARMUP_S = 2.0


class FairLock:
    """A lock granted in the order it was asked for (threading.Lock is not: a thread that releases and asks
    again at once can win over threads that waited). Several streams' workers take turns on one model through
    it, so a stream sending audio faster than real time cannot starve the others. Not re-entrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self) -> None:
        me = object()
        with self._cond:
            self._queue.append(me)
            try:
                while self._held or self._queue[0] is not me:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: give up the place in the queue
                self._queue.remove(me)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class CallStats:
    """Model calls so far (all streams): for the server's log and the streams benchmark."""

    calls: int = 0  # forward passes
    windows: int = 0  # windows computed (a batched call computes several)
    busy_s: float = 0.0  # wall time inside forward passes

    @property
    def mean_batch(self) -> float:
        return self.windows / self.calls if self.calls else 0.0


@dataclass
class WindowRequest:
    """One stream's window waiting for a batched model call: what `ModelView.logits` was given."""

    reuse: FeatureReuse
    audio: np.ndarray
    start_sample: int | None


class WindowScheduler(Protocol):
    """Takes windows of many streams and runs them through `CTCModel.logits_batch` (e.g. several at a time:
    streamer.server.batching.BatchScheduler); the future gets that window's logits."""

    def submit(self, request: WindowRequest) -> Future[np.ndarray]: ...


class CTCModel:
    """A loaded CTC model: frames of logits for windows of 16 kHz audio. Satisfies the core's FrameModel.
    `logits` keeps per-utterance feature-reuse state, so one CTCModel serves one stream; several streams
    share the weights through `view()` (each its own reuse state; model calls one at a time, in turn, under
    `lock`)."""

    def __init__(self, model, processor, name: str, device: str, dtype, quantized: bool,
                 config: ModelConfig | None = None, parameters: int | None = None,
                 language_model_dir: Path | None = None) -> None:
        import torch

        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.dtype = dtype
        self.quantized = quantized
        #: The feature encoder's convolutions run in bfloat16 (streamer.model.loading.bfloat16_conv_layers).
        self.conv_bfloat16 = False
        cfg = model.config
        fe = processor.feature_extractor
        self.sample_rate = int(getattr(fe, "sampling_rate", MODEL_SAMPLE_RATE))
        if self.sample_rate != MODEL_SAMPLE_RATE:
            raise ModelLoadError(f"{name} expects {self.sample_rate} Hz audio; streamer feeds {MODEL_SAMPLE_RATE} Hz",
                                 "use a 16 kHz CTC model")
        self.geometry = FrameGeometry.from_conv(tuple(cfg.conv_kernel), tuple(cfg.conv_stride), self.sample_rate)
        self.vocabulary = Vocabulary.from_tokenizer(processor.tokenizer)
        self.do_normalize = bool(getattr(fe, "do_normalize", True))
        self.use_attention_mask = bool(getattr(fe, "return_attention_mask", False))
        #: The checkpoint's parameter count (pass it for a quantised model: packed int8 linears leave parameters()).
        self.parameters = parameters if parameters is not None else sum(p.numel() for p in model.parameters())
        self._torch = torch
        self.config = config or ModelConfig(name=name)
        self.reuse = FeatureReuse(self)
        #: Held for every model call of this model and its views (the network and the reusing encoder's
        #: hand-off are shared); where a cross-stream batching scheduler would take the windows of all streams.
        self.lock = FairLock()
        self.call_stats = CallStats()
        #: The checkpoint's n-gram language model folder (streamer.model.language_model), or None.
        self.language_model_dir = language_model_dir
        self._conv = tuple(zip(cfg.conv_kernel, cfg.conv_stride))
        from streamer.model.longpass import PieceEncoder

        #: Long single passes (the final pass) compute the conv features piece by piece (less peak memory).
        self._pieces = PieceEncoder.for_model(model, self.geometry)
        self._long_pass_samples = int(LONG_PASS_MIN_S * self.sample_rate)
        #: The final pass's conv features computed while the utterance is spoken (None: an encoder that is not local).
        self.passes = PassFeatures(self, self._pieces) if self._pieces is not None else None
        #: The thread choice on CPU (set by load_model; None: torch's own setting).
        self.tuner: ThreadTuner | None = None

    def view(self, scheduler: WindowScheduler | None = None) -> ModelView:
        """A FrameModel for one more stream over these weights: its own feature-reuse state; its model calls
        under this lock, one window at a time, or through `scheduler` (cross-stream batching)."""
        return ModelView(self, scheduler)

    def frames_of(self, n_samples: int) -> int:
        """Frames the network returns for n samples (its conv layers one by one, as the model computes it)."""
        n = n_samples
        for kernel, stride in self._conv:
            n = max((n - kernel) // stride + 1, 0)
        return n

    def batch_key(self, request: WindowRequest) -> tuple[int, ...] | None:
        """Which windows may share a forward pass: equal keys batch. None: this window runs alone. Models
        without an attention mask (wav2vec2-base: the group norm of the first conv layer spans the whole
        input) batch only windows of exactly the same length, so no padding enters any window; models with
        one batch any lengths (padded, masked: `logits_batch`), key (0,), the scheduler bounds the padding."""
        if request.start_sample is not None and request.reuse.mode != "off" and not request.reuse.batchable:
            return None
        return (0,) if self.use_attention_mask else (len(request.audio),)

    @property
    def description(self) -> str:
        kind = "int8" if self.quantized else str(self.dtype).replace("torch.", "")
        if self.conv_bfloat16:
            kind += ", bf16 conv"
        threads = f", {self.tuner.description}" if self.tuner is not None else ""
        return f"{self.name} ({self.parameters / 1e6:.1f} M params, {self.device}, {kind}{threads})"

    @property
    def threads_in_use(self) -> int:
        """torch threads the model steps run with now (0: not chosen here: a GPU, or never set)."""
        return self.tuner.threads if self.tuner is not None else 0

    @property
    def reuse_mode(self) -> str:
        """off | local | held group norm (see streamer.model.reuse)."""
        return self.reuse.mode

    @property
    def counters(self) -> ReuseCounters:
        return self.reuse.counters

    @counters.setter
    def counters(self, value: ReuseCounters) -> None:
        self.reuse.counters = value

    @property
    def last_stats(self) -> NormStats | None:
        """The statistics the last window was normalised with (None: its own, as the processor does)."""
        return self.reuse.last_stats

    def normalize(self, audio: np.ndarray, stats: NormStats | None = None) -> np.ndarray:
        """What the processor does to one unpadded input: zero mean, unit variance (when configured); with
        `stats`, those statistics instead of the input's own."""
        audio = np.asarray(audio, dtype=np.float32)
        if not self.do_normalize:
            return audio
        if stats is None:
            return ((audio - audio.mean()) / np.sqrt(audio.var() + NORM_EPS)).astype(np.float32)
        return ((audio - np.float32(stats.mean)) / np.float32(stats.std)).astype(np.float32)

    def reset(self) -> None:
        """Forget cached features and statistics (the next window starts a new utterance)."""
        self.reuse.reset()
        if self.passes is not None:
            self.passes.reset()

    def prepare_pass(self, audio: np.ndarray, start_sample: int) -> None:
        """The open utterance's audio so far (from absolute sample `start_sample`, its first frame): compute
        the next piece of its final pass's conv features once its audio is there (streamer.model.passfeatures)."""
        with self.lock:
            self.prepare_pass_with(self.passes, audio, start_sample)

    def pass_logits(self, audio: np.ndarray, start_sample: int) -> np.ndarray:
        """The final pass over an utterance (from absolute sample `start_sample`): `logits(audio)`, on the
        features `prepare_pass` computed where they hold."""
        with self.lock:
            return self.pass_logits_with(self.passes, self.reuse, audio, start_sample)

    def prepare_pass_with(self, passes: PassFeatures | None, audio: np.ndarray, start_sample: int) -> None:
        """`prepare_pass` with one stream's state; the caller holds `lock`."""
        if passes is None:
            return
        if self.tuner is not None:
            self.tuner.apply()
        passes.prepare(np.asarray(audio, dtype=np.float32), start_sample)

    def pass_logits_with(self, passes: PassFeatures | None, reuse: FeatureReuse, audio: np.ndarray,
                         start_sample: int) -> np.ndarray:
        """`pass_logits` with one stream's state; the caller holds `lock`."""
        if passes is None:
            return self.logits_with(reuse, audio, None)
        if self.tuner is not None:
            self.tuner.apply()
        t0 = time.perf_counter()
        reuse.last_stats = None
        out = passes.logits(np.asarray(audio, dtype=np.float32), start_sample)
        reuse.plain_pass_done()
        self._count(1, time.perf_counter() - t0)
        return out

    def logits(self, audio: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        """Logits [frames, vocab] (float32) for one window of 16 kHz mono audio starting at absolute sample
        `start_sample` (a multiple of the stride). Windows of one utterance overlap; with a start sample,
        conv features of the previous window are reused where that is allowed (streamer.model.reuse)."""
        with self.lock:
            return self.logits_with(self.reuse, audio, start_sample)

    def logits_with(self, reuse: FeatureReuse, audio: np.ndarray, start_sample: int | None) -> np.ndarray:
        """`logits` with one stream's reuse state; the caller holds `lock`."""
        audio = np.asarray(audio, dtype=np.float32)
        tuner = self.tuner
        if tuner is not None:
            tuner.apply()
        t0 = time.perf_counter()
        try:
            if reuse.mode == "off" or start_sample is None:
                reuse.last_stats = None
                out = self.forward(self.normalize(audio))
                reuse.plain_pass_done()
                return out
            return reuse.logits(audio, start_sample)
        finally:
            elapsed = time.perf_counter() - t0
            self._count(1, elapsed)
            if tuner is not None and start_sample is not None:  # the windows, not the long final passes
                tuner.observe(len(audio), elapsed)

    def _count(self, windows: int, seconds: float) -> None:
        st = self.call_stats
        st.calls += 1
        st.windows += windows
        st.busy_s += seconds

    def logits_batch(self, requests: list[WindowRequest]) -> list[np.ndarray]:
        """`logits_with` for windows of several streams in one forward pass (the caller holds `lock`): each
        stream's feature reuse prepares its row (normalised with its own statistics, its cached frames), the
        rows are stacked (padded to the longest and masked, for attention-mask models only: `batch_key`), and
        each row's logits and conv features are cut back to its own length. Equal to one pass per window
        within float tolerance (tests/test_batching.py)."""
        if len(requests) == 1:
            r = requests[0]
            return [self.logits_with(r.reuse, r.audio, r.start_sample)]
        torch = self._torch
        t0 = time.perf_counter()
        steps: list[ReuseStep | None] = []
        xs: list[np.ndarray] = []
        for r in requests:
            audio = np.asarray(r.audio, dtype=np.float32)
            if r.reuse.mode == "off" or r.start_sample is None:
                r.reuse.last_stats = None
                steps.append(None)
                xs.append(self.normalize(audio))
            else:
                step = r.reuse.prepare(audio, r.start_sample)
                steps.append(step)
                xs.append(step.x)
        lengths = [len(x) for x in xs]
        longest = max(lengths)
        if not self.use_attention_mask and min(lengths) != longest:
            raise ValueError("windows of different lengths cannot share a pass of a model without an attention mask")
        batch = np.zeros((len(xs), longest), dtype=np.float32)
        for i, x in enumerate(xs):
            batch[i, :len(x)] = x
        xt = torch.from_numpy(batch).to(self.device)
        if self.dtype != torch.float32:
            xt = xt.to(self.dtype)
        kwargs = {}
        if self.use_attention_mask:
            mask = np.zeros((len(xs), longest), dtype=np.int64)
            for i, n in enumerate(lengths):
                mask[i, :n] = 1
            kwargs["attention_mask"] = torch.from_numpy(mask).to(self.device)
        encoder = requests[0].reuse.encoder  # shared by every view of this model (None: reuse off)
        if encoder is not None:
            encoder.cached = [None if s is None else s.cached for s in steps]
        try:
            with torch.inference_mode():
                logits = self.model(xt, **kwargs).logits.float().cpu().numpy()
            features = encoder.last_output if encoder is not None else None
        finally:
            if encoder is not None:
                encoder.cached = None
                encoder.last_output = None
        out = []
        for i, (r, prepared) in enumerate(zip(requests, steps)):
            frames = self.frames_of(lengths[i])
            out.append(np.ascontiguousarray(logits[i, :frames]))
            if prepared is not None:
                assert features is not None
                r.reuse.finish(prepared, features[i:i + 1, :, :frames])
        self._count(len(requests), time.perf_counter() - t0)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """One forward pass over already-normalised audio: logits [frames, vocab] as float32."""
        torch = self._torch
        xt = torch.from_numpy(x)[None].to(self.device)
        if self.dtype != torch.float32:
            xt = xt.to(self.dtype)
        kwargs = {}
        if self.use_attention_mask:
            kwargs["attention_mask"] = torch.ones(xt.shape, dtype=torch.long, device=self.device)
        if len(x) >= self._long_pass_samples and self._pieces is not None:
            from streamer.model.longpass import run_with_features

            with torch.inference_mode():
                features = self._pieces.features(xt)
            out = run_with_features(self.model, xt, features, **kwargs).logits[0].float().cpu().numpy()
            del features
            release_free_memory()  # a long pass's activations: back to the system, not kept by the heap
            return out
        with torch.inference_mode():
            return self.model(xt, **kwargs).logits[0].float().cpu().numpy()

    def warmup(self) -> float:
        """One pass on silence-plus-noise so the first real window is not slow; returns seconds taken."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        self.logits(rng.normal(0, 0.01, int(WARMUP_S * self.sample_rate)).astype(np.float32))
        return time.perf_counter() - t0


class ModelView:
    """One stream's handle on a shared CTCModel (a core FrameModel): the same weights, frame grid and
    vocabulary, its own feature-reuse state (`FeatureReuse.fork`), every call under the model's lock, or
    handed to a scheduler that batches the windows of all streams. A streaming server gives each connection
    one, so streams never see each other's cached features."""

    def __init__(self, ctc: CTCModel, scheduler: WindowScheduler | None = None) -> None:
        self.ctc = ctc
        self.scheduler = scheduler
        self.name = ctc.name
        self.geometry = ctc.geometry
        self.vocabulary = ctc.vocabulary
        self.sample_rate = ctc.sample_rate
        self.reuse = ctc.reuse.fork()
        self.passes = PassFeatures(ctc, ctc._pieces) if ctc._pieces is not None else None

    @property
    def description(self) -> str:
        return self.ctc.description

    @property
    def counters(self) -> ReuseCounters:
        return self.reuse.counters

    @property
    def threads_in_use(self) -> int:
        return self.ctc.threads_in_use

    def reset(self) -> None:
        """Forget this stream's cached features (the next window starts a new utterance)."""
        self.reuse.reset()
        if self.passes is not None:
            self.passes.reset()

    def prepare_pass(self, audio: np.ndarray, start_sample: int) -> None:
        """CTCModel.prepare_pass for this stream."""
        with self.ctc.lock:
            self.ctc.prepare_pass_with(self.passes, audio, start_sample)

    def pass_logits(self, audio: np.ndarray, start_sample: int) -> np.ndarray:
        """CTCModel.pass_logits for this stream (under the model's lock, never batched: one long pass)."""
        with self.ctc.lock:
            return self.ctc.pass_logits_with(self.passes, self.reuse, audio, start_sample)

    def logits(self, audio: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        """This stream's window: under the model's lock, or (with a scheduler) batched with other streams'
        windows; the calling worker thread waits for its logits either way."""
        if self.scheduler is not None:
            return self.scheduler.submit(WindowRequest(self.reuse, audio, start_sample)).result()
        with self.ctc.lock:
            return self.ctc.logits_with(self.reuse, audio, start_sample)
