"""Long inputs (the final pass over a whole utterance, up to 20 s) through the conv feature encoder in pieces,
so its activations do not set the process's peak memory.

The first conv layer of a wav2vec2 model turns 20 s of audio into 512 channels x 64000 steps of float32
(131 MB), and its norm and activation make two more of those: a 20 s pass of the base-size model peaks 390 MB
above the model (measured; BENCHMARKS.md, memory). The encoder is local once its normalisation across time is
fixed: a layer-norm encoder normalises each frame alone, and a group-norm one (wav2vec2-base: one group per
channel of the first layer) normalises with statistics that two passes can take, the first summing the first
layer's output per group piece by piece, the second running the encoder piece by piece with those statistics
held (streamer.model.reuse's held group norm). Each piece of output frames gets the samples of its receptive
field, so the frames equal one whole pass up to float rounding (tests/test_memory.py). The transformer then
runs on all frames at once, as before.
"""

from __future__ import annotations

from typing import Any

from streamer.core.config import LONG_PASS_PIECE_FRAMES, LONG_PASS_SUM_ROWS
from streamer.model.reuse import _first_layer_group_norm, _held_group_norm, feature_encoder_is_local


class PieceEncoder:
    """Computes a model's conv features piece by piece; `None` from `for_model` when its encoder is not one
    this knows to be local (given held group-norm statistics)."""

    def __init__(self, inner, kind: str, geometry) -> None:
        self.inner = inner
        self.kind = kind  # "local" | "group norm"
        self.geometry = geometry
        self._gn: Any = None
        if kind == "group norm":
            found = _first_layer_group_norm(inner)
            assert found is not None
            self._gn = found[1]

    @classmethod
    def for_model(cls, model, geometry) -> PieceEncoder | None:
        base = getattr(model, "base_model", None)
        inner = getattr(base, "feature_extractor", None)
        inner = getattr(inner, "inner", inner)  # under streamer.model.reuse's wrapper
        if inner is None or not hasattr(inner, "conv_layers"):
            return None
        if feature_encoder_is_local(inner):
            return cls(inner, "local", geometry)
        if _first_layer_group_norm(inner) is not None:
            return cls(inner, "group norm", geometry)
        return None

    def features(self, x, piece_frames: int = LONG_PASS_PIECE_FRAMES):
        """Conv features [1, channels, frames] of x [1, samples], piece by piece."""
        import torch

        g = self.geometry
        frames = g.frames_in(x.shape[-1])
        held = None
        if self.kind == "group norm":
            held = self._group_stats(x, piece_frames)
        pieces = [self.piece(x, f0, min(frames, f0 + piece_frames), held) for f0 in range(0, frames, piece_frames)]
        return torch.cat(pieces, dim=-1)

    def piece(self, x, f0: int, f1: int, held=None):
        """Conv features [1, channels, f1 - f0] of frames [f0, f1) of x [1, samples] (frame k starts at sample
        k x stride); `held`: the group-norm statistics to normalise with (a group-norm encoder needs them)."""
        g = self.geometry
        first = self._first
        gn_layer = first.layer_norm if held is not None else None
        if held is not None:
            wrapper = _held_group_norm(self._gn)
            wrapper.held = held
            first.layer_norm = wrapper
        try:
            s0 = f0 * g.stride_samples
            s1 = (f1 - 1) * g.stride_samples + g.receptive_field_samples
            return self.inner(x[..., s0:s1])[..., : f1 - f0]
        finally:
            if gn_layer is not None:
                first.layer_norm = gn_layer

    def group_sums(self, x, step0: int, step1: int, piece_frames: int = LONG_PASS_PIECE_FRAMES):
        """Per-group sums of the first conv layer's output and of its square over its steps [step0, step1)
        of x [1, samples], in float64: what group-norm statistics over any stretch of steps add up from.
        Computed piece_frames of output frames at a time and LONG_PASS_SUM_ROWS rows at a time in float64, so
        that no copy of the whole stretch is made (20 s at once: the layer's output is 131 MB and its float64
        square 262 MB more)."""
        import torch

        conv = self._first.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        groups = self._gn.num_groups
        total = torch.zeros(groups, dtype=torch.float64)
        total_sq = torch.zeros(groups, dtype=torch.float64)
        piece_steps = max(1, piece_frames * self.geometry.stride_samples // stride)
        for t0 in range(step0, step1, piece_steps):
            t1 = min(step1, t0 + piece_steps)
            h = conv(x[:, None, t0 * stride:(t1 - 1) * stride + kernel]).reshape(groups, -1)
            for r0 in range(0, groups, LONG_PASS_SUM_ROWS):
                rows = h[r0:r0 + LONG_PASS_SUM_ROWS].double()
                total[r0:r0 + LONG_PASS_SUM_ROWS] += rows.sum(dim=1)
                total_sq[r0:r0 + LONG_PASS_SUM_ROWS] += (rows * rows).sum(dim=1)
        return total, total_sq

    def conv_steps(self, n_samples: int) -> int:
        """Steps of the first conv layer over n samples."""
        conv = self._first.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        return max(0, (n_samples - kernel) // stride + 1)

    def channels_per_group(self) -> int:
        return int(self._first.conv.out_channels // self._gn.num_groups)

    @property
    def _first(self):
        return self.inner.conv_layers[0]

    def _group_stats(self, x, piece_frames: int):
        """Per-group mean and variance of the first conv layer's output over the whole input, summed piece
        by piece in float64."""
        steps = self.conv_steps(x.shape[-1])
        total, total_sq = self.group_sums(x, 0, steps, piece_frames)
        return mean_var(total, total_sq, steps * self.channels_per_group(), x.dtype)


def mean_var(total, total_sq, n: int, dtype):
    """Group-norm mean and variance from the per-group sums of values and squares over n values each."""
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0.0)
    return mean.to(dtype), var.to(dtype)


class _Given:
    """A stand-in feature encoder that hands out features computed beforehand (one forward pass)."""

    def __init__(self, features) -> None:
        self.features = features

    def __call__(self, input_values):
        return self.features


def run_with_features(model, x, features, **kwargs):
    """The model's forward pass on x with its conv features given (the rest of the network as usual)."""
    import torch

    base = model.base_model
    encoder = base.feature_extractor
    base.__dict__["feature_extractor"] = _Given(features)  # shadows the registered submodule for this call
    try:
        with torch.inference_mode():
            return model(x, **kwargs)
    finally:
        del base.__dict__["feature_extractor"]
        assert base.feature_extractor is encoder
