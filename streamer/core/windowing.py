"""The model's frame grid and the overlapping window schedule.

A CTC model with total conv stride S and receptive field F turns n samples into floor((n - F) / S) + 1
frames; frame k of audio starting at sample s covers [s + kS, s + kS + F). Windows always start on a
multiple of S, so frame k of every window is global frame s/S + k. Each step commits a hop of frames; its
window also holds left-context frames (seen, not committed again) and look-ahead frames (shown tentatively).
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.core.config import WindowConfig
from streamer.core.events import Window


@dataclass(frozen=True)
class FrameGeometry:
    stride_samples: int
    receptive_field_samples: int
    sample_rate: int

    @classmethod
    def from_conv(cls, kernels: tuple[int, ...] | list[int], strides: tuple[int, ...] | list[int],
                  sample_rate: int) -> FrameGeometry:
        if len(kernels) != len(strides) or not kernels:
            raise ValueError(f"conv kernels {kernels} and strides {strides} must be non-empty and of equal length")
        stride, field = 1, 1
        for k, s in zip(kernels, strides):
            field += (k - 1) * stride
            stride *= s
        return cls(stride, field, sample_rate)

    @property
    def frame_s(self) -> float:
        return self.stride_samples / self.sample_rate

    def frames_in(self, n_samples: int) -> int:
        if n_samples < self.receptive_field_samples:
            return 0
        return (n_samples - self.receptive_field_samples) // self.stride_samples + 1

    def frames_complete_before(self, end_sample: int) -> int:
        """Number of global frames (from frame 0) whose receptive field ends at or before end_sample."""
        return self.frames_in(end_sample)

    def frame_start_sample(self, frame: int) -> int:
        return frame * self.stride_samples

    def frame_end_sample(self, frame: int) -> int:
        return frame * self.stride_samples + self.receptive_field_samples

    def ms_to_frames(self, ms: float) -> int:
        return int(round(ms * self.sample_rate / 1000 / self.stride_samples))


class WindowSchedule:
    """Plans the next window of a segment from what is committed and what audio is available."""

    def __init__(self, geometry: FrameGeometry, config: WindowConfig, max_hops_per_step: int = 1) -> None:
        config.validate()
        self.geometry = geometry
        self.hop_frames = max(1, geometry.ms_to_frames(config.hop_ms))
        #: The configured hop; `hop_frames` may be lengthened at run time while steps are slow
        #: (streamer.app.worker.HopGovernor) and is never shorter.
        self.base_hop_frames = self.hop_frames
        self.left_frames = geometry.ms_to_frames(config.left_context_ms)
        self.lookahead_frames = geometry.ms_to_frames(config.lookahead_ms)
        self.max_hops_per_step = max(1, max_hops_per_step)

    def first_frame(self, segment_start_sample: int) -> int:
        """The first global frame of a segment: the first whose window starts on the grid inside it."""
        s = self.geometry.stride_samples
        return -(-segment_start_sample // s)

    def next_window(self, first_frame: int, committed_frame: int, available_end_sample: int,
                    final: bool) -> Window | None:
        """The next step, or None when not enough audio has arrived. With `final`, the audio ends at
        available_end_sample and every remaining frame is committed (possibly no window at all)."""
        g = self.geometry
        complete = g.frames_complete_before(available_end_sample)  # frames [0, complete) can be computed
        if final:
            commit_end = complete
            end_frame = complete
            if commit_end <= committed_frame:
                return None
        else:
            ready = complete - self.lookahead_frames - committed_frame  # frames that could be committed
            if ready < self.hop_frames:
                return None
            hops = min(ready // self.hop_frames, self.max_hops_per_step)
            commit_end = committed_frame + hops * self.hop_frames
            end_frame = commit_end + self.lookahead_frames
        start_frame = max(first_frame, committed_frame - self.left_frames)
        return Window(
            start_sample=g.frame_start_sample(start_frame),
            end_sample=g.frame_end_sample(end_frame - 1),
            first_frame=start_frame,
            commit_start_frame=committed_frame,
            commit_end_frame=commit_end,
            end_frame=end_frame,
            final=final,
        )
