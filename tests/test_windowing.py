"""The frame grid and the window schedule (streamer.core.windowing), checked step by step: every window starts
on the stride grid, the committed frames of successive steps are contiguous and never overlap, catch-up
commits several hops in one larger window, and the final window commits everything that is left."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.config import WindowConfig
from streamer.core.windowing import FrameGeometry, WindowSchedule

WAV2VEC2_KERNELS = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_STRIDES = (5, 2, 2, 2, 2, 2, 2)
GEOMETRY = FrameGeometry.from_conv(WAV2VEC2_KERNELS, WAV2VEC2_STRIDES, 16000)


def test_wav2vec2_conv_stack_gives_stride_320_and_receptive_field_400():
    g = GEOMETRY
    assert (g.stride_samples, g.receptive_field_samples, g.sample_rate) == (320, 400, 16000)
    assert g.frame_s == 0.02
    assert [g.frames_in(n) for n in (0, 399, 400, 719, 720, 16000)] == [0, 0, 1, 1, 2, 49]
    assert (g.frame_start_sample(3), g.frame_end_sample(3)) == (960, 1360)
    assert g.ms_to_frames(160) == 8 and g.ms_to_frames(750) == 38  # 37.5 rounds to even


def test_from_conv_single_layer_and_bad_configs():
    g = FrameGeometry.from_conv([7], [3], 8000)
    assert (g.stride_samples, g.receptive_field_samples) == (3, 7)
    with pytest.raises(ValueError):
        FrameGeometry.from_conv((10, 3), (5,), 16000)
    with pytest.raises(ValueError):
        FrameGeometry.from_conv((), (), 16000)


def run_schedule(schedule, segment_start, chunks, final_end):
    """Drive the schedule as the recognizer does: after each arrival of audio, take every window it allows
    (each commits from where the last one ended); at the end, the final window. Returns the windows."""
    first = schedule.first_frame(segment_start)
    committed = first
    windows = []
    available = segment_start
    for n in chunks:
        available += n
        while (w := schedule.next_window(first, committed, available, final=False)) is not None:
            windows.append(w)
            committed = w.commit_end_frame
    w = schedule.next_window(first, committed, max(available, final_end), final=True)
    if w is not None:
        windows.append(w)
    return first, windows


@settings(max_examples=150, deadline=None)
@given(segment_start=st.integers(0, 50_000), chunks=st.lists(st.integers(1, 12_000), max_size=30),
       tail=st.integers(0, 5_000), hop_ms=st.sampled_from([20, 60, 160, 500]),
       left_ms=st.sampled_from([0, 40, 750, 1000]), look_ms=st.sampled_from([0, 20, 320, 800]),
       hops=st.integers(1, 5))
def test_windows_on_the_grid_commit_contiguously_and_the_final_commits_everything(
        segment_start, chunks, tail, hop_ms, left_ms, look_ms, hops):
    g = GEOMETRY
    schedule = WindowSchedule(g, WindowConfig(hop_ms, left_ms, look_ms), max_hops_per_step=hops)
    end = segment_start + sum(chunks) + tail
    first, windows = run_schedule(schedule, segment_start, chunks, end)

    assert first * g.stride_samples >= segment_start > (first - 1) * g.stride_samples
    committed = first
    for i, w in enumerate(windows):
        # on the grid, and its audio holds exactly its frames
        assert w.start_sample % g.stride_samples == 0
        assert w.start_sample == g.frame_start_sample(w.first_frame)
        assert g.frames_in(w.end_sample - w.start_sample) == w.end_frame - w.first_frame
        assert w.start_sample >= g.frame_start_sample(first)
        # left context, committed hop(s), look-ahead in that order
        assert w.first_frame == max(first, w.commit_start_frame - schedule.left_frames)
        assert w.first_frame <= w.commit_start_frame < w.commit_end_frame <= w.end_frame
        # contiguous, never overlapping, never ahead of the audio
        assert w.commit_start_frame == committed
        committed = w.commit_end_frame
        assert w.end_sample <= end
        if w.final:  # only the last, with no look-ahead, up to the end of the audio
            assert i == len(windows) - 1
            assert w.end_frame == w.commit_end_frame == g.frames_complete_before(end)
        else:
            span = w.commit_end_frame - w.commit_start_frame
            assert span % schedule.hop_frames == 0 and 1 <= span // schedule.hop_frames <= hops
            assert w.end_frame - w.commit_end_frame == schedule.lookahead_frames
    # everything the audio allows is committed in the end, and nothing more
    assert committed == max(first, g.frames_complete_before(end))


def test_no_window_until_a_hop_and_its_lookahead_have_arrived():
    g = GEOMETRY
    schedule = WindowSchedule(g, WindowConfig(hop_ms=160, left_context_ms=750, lookahead_ms=320))
    hop, look = schedule.hop_frames, schedule.lookahead_frames
    assert (hop, look) == (8, 16)
    need = g.frame_end_sample(hop + look - 1)  # frames [0, hop + look) complete
    assert schedule.next_window(0, 0, need - 1, final=False) is None
    w = schedule.next_window(0, 0, need, final=False)
    assert (w.first_frame, w.commit_start_frame, w.commit_end_frame, w.end_frame) == (0, 0, hop, hop + look)
    assert (w.start_sample, w.end_sample) == (0, need)


def test_catch_up_commits_several_hops_in_one_larger_window():
    g = GEOMETRY
    cfg = WindowConfig(hop_ms=160, left_context_ms=750, lookahead_ms=320)
    one, four = WindowSchedule(g, cfg, 1), WindowSchedule(g, cfg, 4)
    hop, look, left = one.hop_frames, one.lookahead_frames, one.left_frames
    committed = 100
    available = g.frame_end_sample(committed + 10 * hop + look - 1)  # ten hops are ready
    w1 = one.next_window(0, committed, available, final=False)
    w4 = four.next_window(0, committed, available, final=False)
    assert w1.commit_end_frame - w1.commit_start_frame == hop
    assert w4.commit_end_frame - w4.commit_start_frame == 4 * hop
    assert w4.first_frame == w1.first_frame == committed - left
    assert w4.end_frame == committed + 4 * hop + look
    assert w4.end_sample - w4.start_sample == (w1.end_sample - w1.start_sample) + 3 * hop * g.stride_samples
    # with only two hops ready, catch-up takes two, not four
    available = g.frame_end_sample(committed + 2 * hop + look - 1)
    w = four.next_window(0, committed, available, final=False)
    assert w.commit_end_frame - w.commit_start_frame == 2 * hop


def test_final_window_commits_the_rest_without_lookahead():
    g = GEOMETRY
    schedule = WindowSchedule(g, WindowConfig(hop_ms=160, left_context_ms=750, lookahead_ms=320))
    end = 16000 + 123
    w = schedule.next_window(0, 20, end, final=True)
    assert w.final and w.commit_start_frame == 20
    assert w.commit_end_frame == w.end_frame == g.frames_complete_before(end) == 50
    assert w.first_frame == 0  # left context clipped at the segment's first frame
    # nothing left: no window
    assert schedule.next_window(0, 50, end, final=True) is None
    # a segment shorter than one receptive field has no frames at all
    assert schedule.next_window(0, 0, 399, final=True) is None


def test_first_frame_is_the_first_grid_point_inside_the_segment():
    schedule = WindowSchedule(GEOMETRY, WindowConfig())
    assert [schedule.first_frame(s) for s in (0, 1, 319, 320, 321, 640)] == [0, 1, 1, 1, 2, 2]
