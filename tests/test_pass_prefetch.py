"""The final pass's conv features computed while the utterance is spoken (WindowConfig.final_pass_prefetch,
streamer.model.passfeatures): what the core hands the model and when (pure core, a hand-built model), and
what the model does with it (tiny random wav2vec2 models of both encoder families: slow)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamer.core.config import Config, VadConfig, WindowConfig
from streamer.core.events import AudioChunk, FinalEvent
from streamer.core.recognizer import Recognizer
from streamer.core.vad import VadSegmenter

from helpers import ContextModel, energy_speech, make_tiny_ctc_folder, speech_like

SR = 16000


class PrefetchRecorder(ContextModel):
    """A context-dependent model with the prefetch hooks: records what the core gives them."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[tuple[int, int, float]] = []  # (start sample, samples, checksum of the audio)
        self.passes: list[tuple[int, int]] = []  # (start sample, samples) of pass_logits
        self.plain_passes = 0  # logits(audio, None)

    def prepare_pass(self, audio, start_sample):
        self.prepared.append((start_sample, len(audio), float(np.sum(audio, dtype=np.float64))))

    def pass_logits(self, audio, start_sample):
        self.passes.append((start_sample, len(audio)))
        return super().logits(audio, None)

    def logits(self, audio, start_sample=None):
        if start_sample is None:
            self.plain_passes += 1
        return super().logits(audio, start_sample)


def recording(seed: int = 3) -> np.ndarray:
    z = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    return np.concatenate([z(0.6), speech_like(seed, 2.5), z(1.0), speech_like(seed + 1, 1.8), z(1.0)])


def run(audio, prefetch: bool = True, chunk: int = 320, hops: int = 1):
    cfg = Config(vad=VadConfig(confirm="off"), window=WindowConfig(final_pass_prefetch=prefetch))
    model = PrefetchRecorder()
    rec = Recognizer(model, cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech), max_hops_per_step=hops)
    events = []
    for i in range(0, len(audio), chunk):
        events += rec.feed(AudioChunk(i, audio[i:i + chunk], SR))
    events += rec.finish()
    return model, [e for e in events if isinstance(e, FinalEvent)], rec


def test_the_core_hands_the_utterance_so_far_to_the_model_and_takes_the_pass_from_it():
    audio = recording()
    model, finals, rec = run(audio)
    assert len(finals) == 2 and all(f.full_pass for f in finals)
    assert model.plain_passes == 0 and len(model.passes) == rec.early_passes == 2
    for final, (start, n) in zip(finals, model.passes):
        assert start == rec.schedule.first_frame(int(round(final.start_s * SR))) * 320
        calls = [(s, length, c) for s, length, c in model.prepared if s == start]
        # once per VAD frame of the utterance, each time its audio from the first frame to the frame's end
        lengths = [length for _, length, _ in calls]
        assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths) and len(calls) > 50
        assert all(np.isclose(c, np.sum(audio[s:s + length], dtype=np.float64)) for s, length, c in calls)
        assert lengths[-1] <= start + n + rec.vad.frame_samples - start  # not past the pass's own input (+ a frame)
    off_model, off_finals, _ = run(audio, prefetch=False)
    assert off_model.prepared == [] and off_model.passes == [] and off_model.plain_passes == 2
    assert [(f.text, f.start_s, f.end_s) for f in off_finals] == [(f.text, f.start_s, f.end_s) for f in finals]


def test_the_model_is_given_every_vad_frame_whatever_the_chunks():
    """However the audio is chunked (20 ms, catch-up, the whole file at once) the model sees the utterance
    grow by at most one VAD frame at a time (what it computes can then depend on the audio alone: the model
    tests below), and the passes and finals are the same."""
    audio = recording(seed=7)
    reference, finals, _ = run(audio)
    for chunk, hops in ((4000, 4), (len(audio), 1)):
        model, other, rec = run(audio, chunk=chunk, hops=hops)
        assert model.passes == reference.passes and [f.text for f in other] == [f.text for f in finals]
        for start, _ in model.passes:
            lengths = [n for s, n, _ in model.prepared if s == start]
            assert lengths[0] < 1.0 * SR and max(np.diff(lengths)) <= rec.vad.frame_samples


# -- the model side: tiny random wav2vec2 models (group-norm "base" and layer-norm "large" encoders) ------------

def _audio(seconds: float, seed: int = 0, swell: float = 0.0) -> np.ndarray:
    """Speech-like noise; `swell`: how much louder the end is than the start (statistics that drift)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    loud = 1 + swell * t / seconds
    return (0.1 * loud * rng.normal(size=t.size) * (1 + 0.5 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def _prepared(ctc, audio: np.ndarray, start: int = 0):
    for end in range(SR // 50, len(audio) + 1, SR // 50):
        ctc.prepare_pass(audio[:end], start)


@pytest.fixture(scope="module", params=["base", "large"])
def tiny(request, tmp_path_factory):
    pytest.importorskip("transformers")
    from streamer.core.config import ModelConfig
    from streamer.model import load_model

    folder = make_tiny_ctc_folder(tmp_path_factory.mktemp(request.param), request.param, seed=2)
    return load_model(ModelConfig(name=str(folder), quantize=False), warmup=False)


@pytest.mark.slow
def test_group_norm_statistics_from_running_sums_equal_the_whole_input(tiny):
    """The group-norm statistics a pass is checked against come from sums kept piece by piece: they equal
    the statistics of the first layer over the whole input, for more audio than was summed and for less."""
    import torch

    from streamer.model.reuse import group_norm_stats

    passes = tiny.passes
    if not passes.group_norm:
        pytest.skip("a layer-norm encoder has no group-norm statistics")
    audio = _audio(4.0, swell=2.0)
    tiny.reset()
    _prepared(tiny, audio[:int(3.0 * SR)])
    for n in (int(3.0 * SR), int(2.2 * SR), len(audio)):
        mean, var = passes._group_stats(audio[:n])
        x = torch.from_numpy(tiny.normalize(audio[:n], passes._stats))[None, None]
        with torch.inference_mode():
            want_mean, want_var = group_norm_stats(passes.encoder._first.conv(x), passes.encoder._gn.num_groups)
        np.testing.assert_allclose(mean.numpy(), want_mean.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(var.numpy(), want_var.numpy(), rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_pieces_whose_statistics_drifted_are_computed_again_and_the_pass_is_then_the_whole_pass(tiny):
    """Audio that gets much louder: with a tight tolerance no piece holds, and the pass equals the pass as it
    ran before (one forward over the whole input); with a loose one the pieces are used."""
    audio = _audio(4.0, seed=1, swell=3.0)
    whole = tiny.forward(tiny.normalize(audio))
    passes = tiny.passes
    tolerance = passes.tolerance
    try:
        passes.tolerance = 0.01
        tiny.reset()
        before = replace(passes.counters)
        _prepared(tiny, audio)
        tight = tiny.pass_logits(audio, 0)
        assert passes.counters.pieces > before.pieces  # pieces were computed ...
        assert passes.counters.frames_prefetched == before.frames_prefetched  # ... and none was used
        np.testing.assert_allclose(tight, whole, atol=1e-4)
        passes.tolerance = 10.0
        tiny.reset()
        _prepared(tiny, audio)
        loose = tiny.pass_logits(audio, 0)
        used = passes.counters.frames_prefetched - before.frames_prefetched
        assert used >= 0.5 * tiny.geometry.frames_in(len(audio))
        assert loose.shape == whole.shape
    finally:
        passes.tolerance = tolerance


@pytest.mark.slow
def test_steady_audio_gives_the_pass_from_pieces_close_to_the_whole_pass(tiny):
    """Audio whose statistics hold still: the pass takes most of its conv frames from the pieces and its
    labels are those of the whole pass; a pass for another utterance start ignores them."""
    audio = _audio(4.0, seed=3)
    whole = tiny.forward(tiny.normalize(audio))
    tiny.reset()
    before = replace(tiny.passes.counters)
    _prepared(tiny, audio)
    got = tiny.pass_logits(audio, 0)
    assert tiny.passes.counters.frames_prefetched - before.frames_prefetched >= 0.5 * len(whole)
    assert np.mean(got.argmax(-1) == whole.argmax(-1)) >= 0.95
    np.testing.assert_allclose(tiny.pass_logits(audio, 320), whole, atol=1e-4)  # not the prepared utterance


@pytest.mark.slow
def test_the_pieces_do_not_depend_on_how_often_the_model_is_given_the_audio(tiny):
    audio = _audio(4.0, seed=5, swell=1.0)
    tiny.reset()
    _prepared(tiny, audio)
    every_frame = tiny.pass_logits(audio, 0)
    tiny.reset()
    rng = np.random.default_rng(0)
    end = 0
    while end < len(audio):  # uneven steps of up to one VAD frame
        end = min(len(audio), end + int(rng.integers(1, 321)))
        tiny.prepare_pass(audio[:end], 0)
    np.testing.assert_array_equal(tiny.pass_logits(audio, 0), every_frame)


@pytest.mark.slow
def test_each_stream_has_its_own_pieces(tiny):
    a, b = tiny.view(), tiny.view()
    audio = _audio(3.0, seed=4)
    _prepared(a, audio)
    assert a.passes.counters.pieces > 0 and b.passes.counters.pieces == 0
    whole = tiny.forward(tiny.normalize(audio))
    np.testing.assert_allclose(b.pass_logits(audio, 0), whole, atol=1e-4)


@pytest.mark.slow
def test_frames_no_piece_has_are_computed_a_long_pass_piece_at_a_time(tiny):
    """A pass over much more audio than was prepared: the frames without a piece go through the conv encoder
    LONG_PASS_PIECE_FRAMES at a time (one call over all of them set the CLI's peak memory, ~90 MB more)."""
    from streamer.core.config import LONG_PASS_PIECE_FRAMES

    audio = _audio(6.0, seed=4)
    passes = tiny.passes
    tolerance, piece = passes.tolerance, passes.encoder.piece
    calls: list[int] = []

    def spy(x, f0, f1, held=None):
        calls.append(f1 - f0)
        return piece(x, f0, f1, held)

    try:
        passes.tolerance = 10.0  # the prepared pieces are used whatever the statistics
        tiny.reset()
        _prepared(tiny, audio[:int(1.5 * SR)])
        passes.encoder.piece = spy
        got = tiny.pass_logits(audio, 0)
    finally:
        passes.tolerance = tolerance
        del passes.encoder.piece
    assert sum(calls) >= 3 * LONG_PASS_PIECE_FRAMES and max(calls) <= LONG_PASS_PIECE_FRAMES, calls
    assert got.shape == tiny.forward(tiny.normalize(audio)).shape
