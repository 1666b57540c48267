"""The final pass's conv features, computed piece by piece while the utterance is spoken
(WindowConfig.final_pass_prefetch).

The final pass decodes a whole utterance again when it ends (streamer.core.recognizer). On one thread the
conv feature encoder is about half of a base-size int8 pass, and it is local once its normalisation is fixed
(streamer.model.longpass): frame k depends only on the samples of its receptive field, given the input's
mean and scale and, behind a group-norm first layer (wav2vec2-base), that layer's statistics. So while the
utterance goes on, its frames are computed in pieces of PASS_PREFETCH_PIECE_FRAMES with statistics held from
the audio so far; when the utterance ends, the pass computes only the frames after the last piece and runs
the transformer over all of them.

The whole utterance's statistics are not known before its end, so a piece is a close approximation, not the
pass itself: the pass uses a piece only if the statistics it was computed with are within
PASS_PREFETCH_TOLERANCE of those of the pass's whole input (relative drift, as the windows' feature reuse
measures it), and computes the frames of the other pieces and those after the last piece with the whole
input's statistics, exactly as the pass always did. During the utterance the held statistics are taken again
from the audio so far whenever it drifts further from them, so the later pieces (with more audio behind their
statistics) hold; the first second or two is usually computed again in the pass. What this costs in text is measured on the
multi-utterance recordings (BENCHMARKS.md, issue 32: the final pass in pieces).

Everything here is a function of the audio alone (the core calls `prepare` once per VAD frame of audio): the
same recording gives the same finals however it is chunked or timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.core.config import LONG_PASS_PIECE_FRAMES, PASS_PREFETCH_MIN_S, PASS_PREFETCH_PIECE_FRAMES, PASS_PREFETCH_TOLERANCE
from streamer.model.longpass import mean_var
from streamer.model.reuse import NormStats, _first_conv_has_bias

if TYPE_CHECKING:
    from streamer.model.inference import CTCModel
    from streamer.model.longpass import PieceEncoder


@dataclass
class PassCounters:
    """What the prefetched final passes did so far (read by the benchmark and the tests)."""

    passes: int = 0  # final passes asked for
    frames: int = 0  # their conv frames
    frames_prefetched: int = 0  # of them, taken from pieces
    pieces: int = 0  # pieces computed
    pieces_dropped: int = 0  # pieces a pass did not take (their statistics had drifted)
    holds: int = 0  # statistics held (at the start of an utterance's pieces and each time they drifted)

    @property
    def prefetched_share(self) -> float:
        return self.frames_prefetched / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class _Piece:
    first_frame: int
    features: Any  # tensor [1, channels, frames]
    stats: NormStats | None  # the input statistics it was normalised with
    group_norm: Any  # the group-norm statistics (mean, var) it was computed with (None: no group norm)


class PassFeatures:
    """One stream's pieces of the open utterance's conv features. `prepare` with the utterance's audio so far,
    `logits` for the final pass over it (and what followed it)."""

    def __init__(self, ctc: CTCModel, encoder: PieceEncoder, piece_frames: int = PASS_PREFETCH_PIECE_FRAMES,
                 min_s: float = PASS_PREFETCH_MIN_S, tolerance: float = PASS_PREFETCH_TOLERANCE) -> None:
        self.ctc = ctc
        self.encoder = encoder
        self.piece_frames = piece_frames
        self.min_samples = int(min_s * ctc.sample_rate)
        self.tolerance = tolerance
        self.group_norm = encoder.kind == "group norm"
        # the input's mean and scale matter unless a group norm after a bias-free first conv removes them
        self.input_matters = ctc.do_normalize and (not self.group_norm or _first_conv_has_bias(encoder.inner))
        self.counters = PassCounters()
        self.reset()

    def reset(self) -> None:
        self._start: int | None = None
        #: Input statistics held now (None: not held yet, or no normalisation). A group-norm encoder keeps the
        #: first ones for the whole utterance (its group-norm statistics are taken under them).
        self._stats: NormStats | None = None
        self._held = False
        self._gn: Any = None  # group-norm statistics held now
        self._sums: Any = None  # per-group sums of the first layer's output (and of its square) ...
        self._sum_steps = 0  # ... over its first _sum_steps steps, input normalised with _stats
        self._summed = np.zeros(0, np.float32)  # the audio those steps were summed over (a prefix of the next)
        self._pieces: list[_Piece] = []
        self._frames = 0

    # -- during the utterance ---------------------------------------------------------------------------------
    def prepare(self, audio: np.ndarray, start_sample: int) -> None:
        """`audio`: the utterance's audio from its first frame (absolute sample `start_sample`) to now. Computes
        the pieces whose audio is all there, each from the audio up to its end only (its statistics too), so
        what is computed does not depend on how often this is called."""
        if start_sample != self._start:
            self.reset()
            self._start = start_sample
        g = self.ctc.geometry
        while True:
            f0, f1 = self._frames, self._frames + self.piece_frames
            end = (f1 - 1) * g.stride_samples + g.receptive_field_samples
            due = max(end, self.min_samples)
            if len(audio) < due:
                return
            self._hold(audio[:due])
            x = self._normalized(audio[:end], self._stats)
            with self.ctc._torch.inference_mode():
                features = self.encoder.piece(x, f0, f1, self._gn)
            self._pieces.append(_Piece(f0, features, self._stats, self._gn))
            self._frames = f1
            self.counters.pieces += 1

    def _hold(self, audio: np.ndarray) -> None:
        """Hold the statistics of `audio` (the utterance so far) if none are held or they drifted from it."""
        if not self._held:
            self._stats = NormStats.of(audio) if self.ctc.do_normalize else None
            self._held = True
            if self.group_norm:
                self._gn = self._group_stats(audio)
            self.counters.holds += 1
            return
        if self.group_norm:
            current = self._group_stats(audio)
            if _group_drift(self._gn, current, self.encoder._gn.eps) > self.tolerance:
                self._gn = current
                self.counters.holds += 1
        elif self._stats is not None and self.input_matters:
            current_stats = NormStats.of(audio)
            if self._stats.drift(current_stats) > self.tolerance:
                self._stats = current_stats
                self.counters.holds += 1

    # -- the final pass ---------------------------------------------------------------------------------------
    def logits(self, audio: np.ndarray, start_sample: int) -> np.ndarray:
        """The final pass over `audio` (from absolute sample `start_sample`): the pieces whose statistics are
        within tolerance of the whole input's, the other frames computed with the whole input's statistics."""
        ctc = self.ctc
        g = ctc.geometry
        frames = g.frames_in(len(audio))
        self.counters.passes += 1
        self.counters.frames += frames
        if start_sample != self._start or not self._pieces or frames == 0:
            return ctc.forward(ctc.normalize(audio))
        torch = ctc._torch
        if self.group_norm:  # the input under the utterance's one normalisation; the whole input's group norm
            stats, gn = self._stats, self._group_stats(audio)
            usable = [p for p in self._pieces
                      if _group_drift(p.group_norm, gn, self.encoder._gn.eps) <= self.tolerance]
            if self.input_matters and stats is not None and stats.drift(NormStats.of(audio)) > self.tolerance:
                usable = []
        else:
            stats = NormStats.of(audio) if ctc.do_normalize else None
            usable = [p for p in self._pieces
                      if p.stats is None or not self.input_matters or p.stats.drift(stats) <= self.tolerance]  # type: ignore[arg-type]
            gn = None
        usable = [p for p in usable if p.first_frame + self.piece_frames <= frames]
        if not usable:
            self.counters.pieces_dropped += len(self._pieces)
            return ctc.forward(ctc.normalize(audio))
        x = self._normalized(audio, stats)
        parts = []
        have = {p.first_frame: p for p in usable}
        reused = 0
        with torch.inference_mode():
            f = 0
            while f < frames:
                piece = have.get(f)
                if piece is not None:
                    parts.append(piece.features)
                    reused += self.piece_frames
                    f += self.piece_frames
                    continue
                end = f  # the frames no piece has, LONG_PASS_PIECE_FRAMES at a time (as streamer.model.longpass):
                # one call over a long stretch peaked ~90 MB higher (the CLI, base int8, 52 s file: 700 vs 611 MB)
                while end < frames and end not in have and end - f < LONG_PASS_PIECE_FRAMES:
                    end = min(frames, end + self.piece_frames - end % self.piece_frames)
                parts.append(self.encoder.piece(x, f, end, gn))
                f = end
            features = torch.cat(parts, dim=-1)
            kwargs = {}
            if ctc.use_attention_mask:
                kwargs["attention_mask"] = torch.ones(x.shape, dtype=torch.long, device=ctc.device)
            from streamer.model.longpass import run_with_features

            out = run_with_features(ctc.model, x, features, **kwargs).logits[0].float().cpu().numpy()
        self.counters.frames_prefetched += reused
        self.counters.pieces_dropped += len(self._pieces) - len(usable)
        return out

    # -- statistics -------------------------------------------------------------------------------------------
    def _normalized(self, audio: np.ndarray, stats: NormStats | None):
        """Audio [1, samples] as a tensor, normalised with `stats`."""
        ctc = self.ctc
        xt = ctc._torch.from_numpy(ctc.normalize(audio, stats))[None].to(ctc.device)
        return xt if xt.dtype == ctc.dtype else xt.to(ctc.dtype)

    def _group_stats(self, audio: np.ndarray):
        """Group-norm statistics of the first layer's output over `audio` (input normalised with the held
        statistics), from running sums: only the steps not summed yet are computed (or taken back out)."""
        torch = self.ctc._torch
        enc = self.encoder
        steps = enc.conv_steps(len(audio))
        stride = enc._first.conv.stride[0]
        with torch.inference_mode():
            if self._sums is None:
                self._sums = enc.group_sums(self._normalized(audio, self._stats), 0, steps)
                self._sum_steps, self._summed = steps, audio
            total, total_sq = self._sums
            if steps > self._sum_steps:  # more audio: add its steps to the running sums
                s0 = self._sum_steps * stride
                more, more_sq = enc.group_sums(self._normalized(audio[s0:], self._stats), 0, steps - self._sum_steps)
                self._sums = total, total_sq = total + more, total_sq + more_sq
                self._sum_steps, self._summed = steps, audio
            elif steps < self._sum_steps:  # a pass over less than was summed: take the rest back out
                s0 = steps * stride
                less, less_sq = enc.group_sums(self._normalized(self._summed[s0:], self._stats), 0,
                                               self._sum_steps - steps)
                total, total_sq = total - less, total_sq - less_sq
            return mean_var(total, total_sq, steps * enc.channels_per_group(), self.ctc.dtype)


def _group_drift(held, current, eps: float) -> float:
    """Mean over groups of the relative change of scale and of offset (in units of the held scale), as
    streamer.model.reuse measures the windows' held group norm."""
    import torch

    h_mean, h_var = held
    mean, var = current
    h_std = torch.sqrt(h_var.float() + eps)
    scale = (torch.sqrt(var.float() + eps) / h_std - 1).abs()
    offset = (mean.float() - h_mean.float()).abs() / h_std
    return float(torch.maximum(scale, offset).mean())
