"""Feature reuse across the overlapping windows of one utterance (`ModelConfig.reuse_features`).

Overlapping windows share most of their audio. Where the conv feature encoder is local (frame k depends only
on the samples of its receptive field in the normalised input, as in layer-norm encoders such as large-lv60),
the frames the previous window computed are exact for the new one, provided both windows were normalised
with the same statistics; only the new frames go through the convolutions. So the input statistics are held
while they stay within `norm_tolerance` of the current ones (the window's own, or the running utterance
statistics: `norm_stats`) and the window is recomputed from scratch with fresh statistics when they drift
further. Given the statistics in use, reused logits equal a full forward pass (tests/test_feature_reuse.py).

EXPERIMENTAL, off by default (`reuse_group_norm`): a group-norm encoder (wav2vec2-base) normalises each channel
of its first conv layer over the whole window, so no frame is local. The held-group-norm mode applies the
same idea one level down: the group-norm statistics are held within `norm_tolerance`, the first layer becomes
a per-channel affine map, and the encoder is local given them. Its effect on text has not been measured on a
trained group-norm checkpoint; it stays out of the shipped path until it has been.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used (loading torch is slow)
    import torch

#: The processor's variance floor in zero-mean unit-variance normalisation.
NORM_EPS = 1e-7


@dataclass(frozen=True)
class NormStats:
    """Zero-mean unit-variance statistics an input window was normalised with."""

    mean: float
    std: float

    def drift(self, other: NormStats) -> float:
        """Relative change from self to other (of the scale, and of the mean in units of the scale)."""
        return max(abs(other.std / self.std - 1.0), abs(other.mean - self.mean) / self.std)

    @staticmethod
    def of(audio: np.ndarray) -> NormStats:
        a = np.asarray(audio, dtype=np.float32)
        return NormStats(float(a.mean()), float(np.sqrt(a.var() + NORM_EPS)))


@dataclass
class ReuseCounters:
    """What feature reuse did so far (read by the benchmark)."""

    windows: int = 0
    frames_total: int = 0
    frames_reused: int = 0
    restarts: int = 0  # windows recomputed from scratch because the statistics drifted

    @property
    def reused_share(self) -> float:
        return self.frames_reused / self.frames_total if self.frames_total else 0.0


def feature_encoder_is_local(encoder) -> bool:
    """True when every output frame of the conv feature encoder depends only on the samples in its
    receptive field: no padding, and no normalisation across time (GroupNorm/BatchNorm)."""
    import torch

    for module in encoder.modules():
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)):
            return False
        if isinstance(module, torch.nn.Conv1d) and any(p != 0 for p in module.padding):
            return False
    return True


def _first_conv_has_bias(encoder) -> bool:
    import torch

    for module in encoder.modules():
        if isinstance(module, torch.nn.Conv1d):
            return module.bias is not None
    return False


def _reusing_encoder(inner, stride_samples: int):
    """Wrap a model's convolutional feature encoder so that frames already computed for the previous
    window are prepended and only the audio of the new frames goes through the convolutions. Before a
    forward pass set `.cached` to a tensor [batch, channels, k] holding the window's first k frames (None:
    a plain pass), or, for a batch of windows of several streams, to a list with one entry per row (a
    tensor [1, channels, k_i] or None); after it `.last_output` holds all the window's frames."""
    import torch

    class ReusingFeatureEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.stride_samples = stride_samples
            self.cached: torch.Tensor | list[torch.Tensor | None] | None = None
            self.last_output: torch.Tensor | None = None

        def forward(self, input_values):
            cached, self.cached = self.cached, None
            if isinstance(cached, list):
                out = self._rows(input_values, cached)
            elif cached is None or cached.shape[-1] == 0:
                out = self.inner(input_values)
            else:
                rest = input_values[..., cached.shape[-1] * self.stride_samples:]
                out = torch.cat([cached, self.inner(rest)], dim=-1)
            self.last_output = out
            return out

        def _rows(self, input_values, cached: list[torch.Tensor | None]):
            """Rows with the same number of cached frames go through the convolutions together (all rows
            have the same padded length, so every row ends with the same number of frames)."""
            by_k: dict[int, list[int]] = {}
            for i, c in enumerate(cached):
                by_k.setdefault(0 if c is None else int(c.shape[-1]), []).append(i)
            rows: list[Any] = [None] * len(cached)
            for k, idx in by_k.items():
                x = input_values[idx, k * self.stride_samples:] if k else input_values[idx]
                new = self.inner(x)
                for j, i in enumerate(idx):
                    c = cached[i]
                    rows[i] = new[j:j + 1] if not k or c is None else torch.cat([c, new[j:j + 1]], dim=-1)
            return torch.cat(rows, dim=0)

    return ReusingFeatureEncoder()


@dataclass
class ReuseStep:
    """One window between `FeatureReuse.prepare` and `finish`: its normalised input and cached frames."""

    x: np.ndarray
    cached: Any  # torch.Tensor [1, channels, reused] or None
    utterance: _Utterance
    first_frame: int
    n_frames: int
    reused: int


class _Utterance:
    """State of a run of overlapping windows (one utterance): running sums of its audio, the statistics in
    use, and the cached conv features of the last window. Owned by the thread that calls CTCModel.logits."""

    def __init__(self, start_sample: int, audio: np.ndarray) -> None:
        a = audio.astype(np.float64)
        self.n, self.s1, self.s2 = len(a), float(a.sum()), float(np.dot(a, a))
        self.start_sample = start_sample
        self.end_sample = start_sample + len(audio)
        self.stats: NormStats | None = None
        #: held (mean, variance) per group of the first conv layer's GroupNorm
        self.group_norm: tuple[torch.Tensor, torch.Tensor] | None = None
        self.features: torch.Tensor | None = None  # [1, channels, frames] of the last window
        self.first_frame = 0

    def extend(self, start_sample: int, audio: np.ndarray) -> None:
        end = start_sample + len(audio)
        if end > self.end_sample:
            new = audio[self.end_sample - start_sample:].astype(np.float64)
            self.n += len(new)
            self.s1 += float(new.sum())
            self.s2 += float(np.dot(new, new))
            self.end_sample = end
        self.start_sample = start_sample

    def running_stats(self) -> NormStats:
        mean = self.s1 / self.n
        var = max(self.s2 / self.n - mean * mean, 0.0)
        return NormStats(mean, float(np.sqrt(var + NORM_EPS)))


class FeatureReuse:
    """Installs a reusing feature encoder into a CTCModel's network and computes windows with it.
    `mode`: off (nothing installed) | local (exact given the input statistics) | held group norm
    (experimental; exact given the held statistics)."""

    def __init__(self, ctc) -> None:
        self.ctc = ctc
        self.config = ctc.config
        self.counters = ReuseCounters()
        #: The statistics the last window was normalised with (None: its own, as the processor does).
        self.last_stats: NormStats | None = None
        self._utterance: _Utterance | None = None
        self.encoder: Any = None  # the reusing feature encoder installed in the network (mode not off)
        self._first_conv: torch.nn.Module | None = None
        self.held_gn: Any = None  # the first conv layer's held group norm (mode held group norm)
        base = getattr(ctc.model, "base_model", None)
        inner = getattr(base, "feature_extractor", None)
        local = inner is not None and feature_encoder_is_local(inner)
        #: Do the conv features depend on the input statistics? Not behind a group norm (it removes any
        #: offset and scale per channel), nor without normalisation; yes behind a layer norm after a conv
        #: with a bias (the bias is added before the per-frame norm).
        self.features_depend_on_stats = ctc.do_normalize and local and _first_conv_has_bias(inner)
        mode = "off"
        if inner is not None and self.config.reuse_features:
            if local:
                mode = "local"
            elif self.config.reuse_group_norm:
                found = _first_layer_group_norm(inner)
                if found is not None:
                    first, gn = found
                    self._first_conv = first.conv
                    self.held_gn = first.layer_norm = _held_group_norm(gn)
                    mode = "held group norm"
        if mode != "off":
            assert base is not None  # it holds `inner`
            self.encoder = _reusing_encoder(inner, ctc.geometry.stride_samples)
            base.feature_extractor = self.encoder
        self.mode = mode

    def reset(self) -> None:
        self._utterance = None

    def fork(self) -> FeatureReuse:
        """Another stream's reuse state over the same installed encoder: its own utterance cache, statistics
        and counters (the cache is keyed by sample positions that start at 0 in every stream, so two streams
        must never share it). Only one stream at a time may compute (CTCModel's lock)."""
        other = copy.copy(self)
        other.counters = ReuseCounters()
        other.last_stats = None
        other._utterance = None
        return other

    def plain_pass_done(self) -> None:
        """A forward pass without reuse ran through the wrapped encoder: its output is not a cache."""
        if self.encoder is not None:
            self.encoder.last_output = None

    def logits(self, audio: np.ndarray, start_sample: int) -> np.ndarray:
        ctc = self.ctc
        step = self.prepare(audio, start_sample)
        assert self.encoder is not None
        self.encoder.cached = step.cached
        try:
            out = ctc.forward(step.x)
        finally:
            self.encoder.cached = None
            if self.held_gn is not None:
                self.held_gn.held = None  # plain GroupNorm for anyone else calling the model
        features, self.encoder.last_output = self.encoder.last_output, None
        self.finish(step, features)
        return out

    @property
    def batchable(self) -> bool:
        """Can this stream's reusing windows share a forward pass with other streams' windows? Not in the
        held-group-norm mode: the held statistics live in the one shared GroupNorm module."""
        return self.held_gn is None

    def prepare(self, audio: np.ndarray, start_sample: int) -> ReuseStep:
        """First half of `logits`: the normalised input and the cached leading frames for this window (the
        held-group-norm mode also sets the shared GroupNorm's held statistics: run its pass alone)."""
        g = self.ctc.geometry
        if start_sample % g.stride_samples:
            raise ValueError(f"window start {start_sample} is not on the {g.stride_samples}-sample frame grid")
        first_frame = start_sample // g.stride_samples
        n_frames = g.frames_in(len(audio))
        utt = self._utterance
        if utt is not None and utt.start_sample <= start_sample <= utt.end_sample:
            utt.extend(start_sample, audio)
        else:
            utt = self._utterance = _Utterance(start_sample, audio)
        if self.held_gn is not None:
            stats = self._hold_group_norm(utt, audio)
        elif not self.features_depend_on_stats:
            stats = None  # per-window normalisation: the features do not depend on it
        else:
            current = self._current_stats(utt, audio)
            if utt.stats is None or utt.stats.drift(current) > self.config.norm_tolerance:
                self._restart(utt)
                utt.stats = current
            stats = utt.stats
        self.last_stats = stats
        cached = None
        reused = 0
        if utt.features is not None:
            have_end = utt.first_frame + utt.features.shape[-1]
            if utt.first_frame <= first_frame < have_end:
                reused = min(have_end - first_frame, n_frames)
                offset = first_frame - utt.first_frame
                cached = utt.features[..., offset:offset + reused]
        if reused == n_frames and n_frames > 0:
            reused = n_frames - 1  # always run the convolutions on at least one frame (keeps shapes simple)
            assert cached is not None  # reused > 0 came from the cache
            cached = cached[..., :reused]
        return ReuseStep(self.ctc.normalize(audio, stats), cached, utt, first_frame, n_frames, reused)

    def finish(self, step: ReuseStep, features) -> None:
        """Second half of `logits`: keep the window's conv features [1, channels, frames] for the next one."""
        step.utterance.features = features
        step.utterance.first_frame = step.first_frame
        self.counters.windows += 1
        self.counters.frames_total += step.n_frames
        self.counters.frames_reused += step.reused

    def _current_stats(self, utt: _Utterance, audio: np.ndarray) -> NormStats:
        return utt.running_stats() if self.config.norm_stats == "utterance" else NormStats.of(audio)

    def _restart(self, utt: _Utterance) -> None:
        if utt.features is not None:
            self.counters.restarts += 1
        utt.features = None

    # -- experimental: held group-norm statistics (off by default, see the module notes) -------------------
    def _hold_group_norm(self, utt: _Utterance, audio: np.ndarray) -> NormStats:
        """Input statistics and first-layer group-norm statistics for this window: the held ones while the
        window's own group-norm statistics stay within tolerance (mean over groups of the relative change of
        scale and of offset), else fresh ones from this window (and the cache is dropped)."""
        import torch

        ctc, held_gn, first_conv = self.ctc, self.held_gn, self._first_conv
        assert held_gn is not None and first_conv is not None

        def gn_stats(stats: NormStats):
            x = torch.from_numpy(ctc.normalize(audio, stats))[None, None].to(ctc.device, ctc.dtype)
            with torch.inference_mode():
                return group_norm_stats(first_conv(x), held_gn.gn.num_groups)

        if utt.stats is not None and utt.group_norm is not None:
            mean, var = gn_stats(utt.stats)
            h_mean, h_var = utt.group_norm
            h_std = torch.sqrt(h_var + held_gn.gn.eps)
            drift = torch.maximum((torch.sqrt(var + held_gn.gn.eps) / h_std - 1).abs(), (mean - h_mean).abs() / h_std)
            if float(drift.mean()) <= self.config.norm_tolerance:
                held_gn.held = utt.group_norm
                return utt.stats
        self._restart(utt)
        utt.stats = self._current_stats(utt, audio)
        utt.group_norm = gn_stats(utt.stats)
        held_gn.held = utt.group_norm
        return utt.stats


def group_norm_stats(h, num_groups: int):
    """Per-group mean and (biased) variance over channels-in-group and time of h [1, channels, time], in
    float32 (what GroupNorm computes)."""
    x = h.float().reshape(num_groups, -1)
    return x.mean(dim=1), x.var(dim=1, unbiased=False)


def _first_layer_group_norm(encoder):
    """(first conv layer, its GroupNorm) when that is the encoder's only normalisation across time and no
    conv pads (wav2vec2 / HuBERT / WavLM base-style encoders); else None."""
    import torch

    layers = getattr(encoder, "conv_layers", None)
    if not layers:
        return None
    first = layers[0]
    gn = getattr(first, "layer_norm", None)
    conv = getattr(first, "conv", None)
    if not isinstance(gn, torch.nn.GroupNorm) or not isinstance(conv, torch.nn.Conv1d):
        return None
    for module in encoder.modules():
        if module is not gn and isinstance(module, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)):
            return None
        if isinstance(module, torch.nn.Conv1d) and any(p != 0 for p in module.padding):
            return None
    return first, gn


def _held_group_norm(gn):
    """Wrap a GroupNorm so that it can normalise with statistics held from an earlier window (`.held`, a
    pair of per-group mean and variance tensors) instead of the input's own; then it is a per-channel
    affine map and the conv encoder around it is local. With `.held` None it is the plain GroupNorm."""
    import torch

    class HeldGroupNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gn = gn
            self.held: tuple[torch.Tensor, torch.Tensor] | None = None

        def forward(self, x):
            if self.held is None:
                return self.gn(x)
            mean, var = self.held
            b, c, t = x.shape
            g = self.gn.num_groups
            y = (x.reshape(b, g, -1) - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.gn.eps)
            y = y.reshape(b, c, t)
            if self.gn.affine:
                y = y * self.gn.weight[None, :, None] + self.gn.bias[None, :, None]
            return y

    return HeldGroupNorm()
