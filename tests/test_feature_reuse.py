"""Feature reuse across overlapping windows: exact where claimed, measured where not.

The windows come from the real WindowSchedule, so they overlap the way the Recognizer's do."""

from dataclasses import replace

import numpy as np
import pytest

from streamer.core.config import ModelConfig, WindowConfig
from streamer.core.windowing import WindowSchedule
from streamer.model import load_model
from streamer.model.reuse import NormStats

from helpers import make_tiny_ctc_folder

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: make_tiny_ctc_folder(root / family, family) for family in ("large", "base")}


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a slowly varying loudness and a DC offset, so window statistics really change."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.uniform(0.02, 0.4, n // 1600 + 1), 1600)[:n]
    return (rng.normal(0, 1, n) * env + 0.01).astype(np.float32)


def schedule_windows(model, audio, window=WindowConfig()):
    """(start_sample, audio) of each step a Recognizer would run over one utterance of `audio`."""
    sched = WindowSchedule(model.geometry, window)
    out, committed, end = [], 0, len(audio)
    for available in range(320, end + 1, 320):
        while (w := sched.next_window(0, committed, available, final=False)) is not None:
            out.append((w.start_sample, audio[w.start_sample:w.end_sample]))
            committed = w.commit_end_frame
    w = sched.next_window(0, committed, end, final=True)
    if w is not None:
        out.append((w.start_sample, audio[w.start_sample:w.end_sample]))
    return out


def load(folder, **kw):
    """float32 unless asked: exactness is a float property (int8 rounding is tested on its own below)."""
    kw = {"quantize": False, **kw}
    return load_model(ModelConfig(name=str(folder), threads=1, **kw), warmup=False)


def reference(plain, audio, stats: NormStats | None):
    """A full forward pass of the unwrapped model on the window normalised with `stats`."""
    return plain.forward(plain.normalize(audio, stats))


@pytest.mark.parametrize("tolerance,norm_stats", [(float("inf"), "window"), (0.1, "window"), (0.1, "utterance")])
def test_layer_norm_reuse_equals_full_forward(tiny_folders, tolerance, norm_stats):
    reusing = load(tiny_folders["large"], norm_tolerance=tolerance, norm_stats=norm_stats)
    plain = load(tiny_folders["large"], reuse_features=False)
    assert reusing.reuse_mode == "local" and reusing.reuse.features_depend_on_stats
    assert plain.reuse_mode == "off"
    windows = schedule_windows(reusing, speechlike(4.0))
    assert len(windows) > 10
    for start, audio in windows:
        got = reusing.logits(audio, start)
        want = reference(plain, audio, reusing.last_stats)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    c = reusing.counters
    assert c.windows == len(windows)
    assert c.reused_share > 0.3, c  # most frames of a sliding window were computed before
    if tolerance == float("inf"):
        assert c.restarts == 0
    elif norm_stats == "window":
        assert c.restarts > 0  # the loudness changes: some windows were recomputed with fresh statistics


def test_layer_norm_reuse_with_int8_matches_to_quantisation_rounding(tiny_folders):
    """With int8 linear layers the transformer sees the same conv features either way, up to float
    rounding in the convolutions, which int8 activation rounding can turn into one quantisation step."""
    reusing = load(tiny_folders["large"], quantize=True, norm_tolerance=float("inf"))
    plain = load(tiny_folders["large"], quantize=True, reuse_features=False)
    assert reusing.quantized
    worst = 0.0
    for start, audio in schedule_windows(reusing, speechlike(3.0, seed=5)):
        got = reusing.logits(audio, start)
        want = reference(plain, audio, reusing.last_stats)
        worst = max(worst, float(np.abs(got - want).max() / (np.abs(want).max() + 1e-9)))
        assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.98
    assert worst < 0.02


def test_int8_model_reports_the_parameters_of_the_checkpoint(tiny_folders):
    """Quantised linear layers are packed and leave model.parameters(); the count shown in the UI header
    and the benchmark's params_m must still be the checkpoint's."""
    int8 = load(tiny_folders["large"], quantize=True)
    fp32 = load(tiny_folders["large"])
    assert int8.quantized and not fp32.quantized
    assert int8.parameters == fp32.parameters > sum(p.numel() for p in int8.model.parameters())


def test_zero_tolerance_is_the_processor_per_window(tiny_folders):
    """With no drift allowed every window is normalised with its own statistics, as the processor does."""
    import torch

    reusing = load(tiny_folders["large"], norm_tolerance=0.0)
    proc = reusing.processor
    for start, audio in schedule_windows(reusing, speechlike(3.0, seed=1)):
        got = reusing.logits(audio, start)
        inputs = proc(audio, sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            want = reusing.model(**inputs).logits[0].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert reusing.counters.frames_reused == 0


def test_new_utterance_does_not_reuse(tiny_folders):
    reusing = load(tiny_folders["large"], norm_tolerance=float("inf"))
    audio = speechlike(2.0)
    reusing.logits(audio[:16000], 0)
    reusing.logits(audio[:16000], 32000)  # a later window that does not overlap: a new utterance
    assert reusing.counters.frames_reused == 0


def test_group_norm_reuse_is_off_unless_asked(tiny_folders):
    assert load(tiny_folders["base"]).reuse_mode == "off"
    assert load(tiny_folders["base"], reuse_group_norm=True).reuse_mode == "held group norm"


def full_forward_with_held_group_norm(plain, audio, stats: NormStats, group_norm):
    """The unwrapped group-norm model on the window, its first GroupNorm using the given statistics."""
    import torch

    layer = plain.model.base_model.feature_extractor.conv_layers[0]
    gn = layer.layer_norm
    mean, var = group_norm

    def held(module, inputs, output):
        x = inputs[0]
        y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + gn.eps)
        return y * gn.weight[None, :, None] + gn.bias[None, :, None]

    handle = gn.register_forward_hook(held)
    try:
        return plain.forward(plain.normalize(audio, stats))
    finally:
        handle.remove()


@pytest.mark.parametrize("tolerance", [float("inf"), 0.05])
def test_group_norm_reuse_equals_full_forward_with_the_held_statistics(tiny_folders, tolerance):
    reusing = load(tiny_folders["base"], reuse_group_norm=True, norm_tolerance=tolerance)
    plain = load(tiny_folders["base"], reuse_features=False)
    for start, audio in schedule_windows(reusing, speechlike(4.0, seed=2)):
        got = reusing.logits(audio, start)
        want = full_forward_with_held_group_norm(plain, audio, reusing.last_stats, reusing.reuse._utterance.group_norm)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    c = reusing.counters
    assert c.reused_share > 0.3, c
    assert (c.restarts == 0) if tolerance == float("inf") else (c.restarts > 0)
    # the model object itself is left with a plain GroupNorm (the offline decode uses it)
    assert reusing.reuse.held_gn.held is None


def test_group_norm_reuse_with_zero_tolerance_is_the_plain_model(tiny_folders):
    reusing = load(tiny_folders["base"], reuse_group_norm=True, norm_tolerance=0.0)
    plain = load(tiny_folders["base"], reuse_features=False)
    for start, audio in schedule_windows(reusing, speechlike(3.0, seed=4)):
        np.testing.assert_allclose(reusing.logits(audio, start), plain.logits(audio, start), rtol=1e-4, atol=1e-4)
    assert reusing.counters.frames_reused == 0


def test_group_norm_ignores_input_statistics(tiny_folders):
    """Why the group-norm path needs no statistics bookkeeping: any per-window offset and scale of the
    input is removed by the first layer's group norm (conv without bias)."""
    plain = load(tiny_folders["base"], reuse_features=False)
    audio = speechlike(1.5, seed=3)
    a = plain.forward(plain.normalize(audio))
    b = plain.forward(plain.normalize(audio, NormStats(0.05, 3.0)))
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_layer_norm_depends_on_input_statistics(tiny_folders):
    """And why the layer-norm path does: the first conv's bias is added before the per-frame norm."""
    plain = load(tiny_folders["large"], reuse_features=False)
    audio = speechlike(1.5, seed=3)
    a = plain.forward(plain.normalize(audio))
    b = plain.forward(plain.normalize(audio, NormStats(0.05, 3.0)))
    assert np.abs(a - b).max() > 1e-3


def test_bad_window_start_is_rejected(tiny_folders):
    reusing = load(tiny_folders["large"])
    with pytest.raises(ValueError, match="frame grid"):
        reusing.logits(np.zeros(8000, np.float32), 100)


def test_config_validation():
    from streamer.errors import ConfigError

    with pytest.raises(ConfigError):
        replace(ModelConfig(), norm_stats="segment").validate()
    with pytest.raises(ConfigError):
        replace(ModelConfig(), norm_tolerance=-1).validate()


def test_auto_quantisation_picks_int8_by_model_size(tiny_folders):
    """Default (quantize None): int8 on CPU only from quantize_min_parameters up (wav2vec2-base is 94 M);
    a small model such as the demo stays float32, where int8 saves little and moves its text."""
    small = load_model(ModelConfig(name=str(tiny_folders["large"]), threads=1), warmup=False)
    assert ModelConfig().quantize is None and not small.quantized
    assert small.parameters < ModelConfig().quantize_min_parameters
    low = load_model(ModelConfig(name=str(tiny_folders["large"]), threads=1, quantize_min_parameters=small.parameters),
                     warmup=False)
    assert low.quantized
    forced_off = load_model(ModelConfig(name=str(tiny_folders["large"]), threads=1, quantize=False,
                                        quantize_min_parameters=0), warmup=False)
    assert not forced_off.quantized
