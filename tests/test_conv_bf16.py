"""The convolutional feature encoder of an int8 model in bfloat16 (ModelConfig.conv_bfloat16)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamer.core.config import ModelConfig
from streamer.model.runtime import cpu_has_native_bf16

pytestmark = pytest.mark.slow  # loads models


def _load(folder, **kw):
    from streamer.model import load_model

    return load_model(replace(ModelConfig(name=str(folder), threads=1), **kw), warmup=False)


def test_cpu_flags_decide_native_bf16():
    assert cpu_has_native_bf16("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 sse\n")
    assert cpu_has_native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags : fpu avx2 avx512f avx512bw\n")  # bf16 would be emulated
    assert not cpu_has_native_bf16("")


@pytest.mark.parametrize("family", ["base", "large"])
def test_bf16_convolutions_keep_the_logits_and_only_on_int8_models(tmp_path, family):
    from helpers import make_tiny_ctc_folder, speech_like

    folder = make_tiny_ctc_folder(tmp_path / family, family, seed=1)
    plain = _load(folder, quantize=True, conv_bfloat16=False, reuse_features=False)
    bf16 = _load(folder, quantize=True, conv_bfloat16=True, reuse_features=False)
    assert not plain.conv_bfloat16 and bf16.conv_bfloat16 and "bf16 conv" in bf16.description
    import torch

    convs = [layer.conv for layer in bf16.model.wav2vec2.feature_extractor.conv_layers]
    assert convs and all(c.weight.dtype == torch.bfloat16 for c in convs)
    audio = speech_like(3, 2.0)
    want, got = plain.logits(audio), bf16.logits(audio)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert not np.array_equal(got, want), "the convolutions did not change precision"
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9
    # a float32 model is never changed, even when asked: its decode is the exact reference
    assert not _load(folder, quantize=False, conv_bfloat16=True).conv_bfloat16
