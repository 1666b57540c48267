"""Memory: the int8 copy in the user cache (same logits, invalidated by a changed checkpoint, a damaged copy
rebuilt with a warning) and long passes through the conv encoder in pieces (same frames as one pass)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest

from helpers import make_tiny_ctc_folder

pytestmark = pytest.mark.slow  # loads models


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "int8"


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.1 * rng.normal(size=t.size) * (1 + np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def _load(folder, **kw):
    from streamer.core.config import ModelConfig
    from streamer.model import load_model

    return load_model(replace(ModelConfig(name=str(folder)), **kw), warmup=False)


def test_int8_cache_gives_the_same_logits_and_follows_the_checkpoint(tmp_path, cache, caplog):
    folder = make_tiny_ctc_folder(tmp_path / "tiny", "base", seed=1)
    audio = _audio(1.3)
    first = _load(folder, quantize=True)
    copies = list(cache.glob("*.pt"))
    assert len(copies) == 1, "the first int8 load keeps a copy"
    again = _load(folder, quantize=True)
    assert again.quantized and again.parameters == first.parameters
    np.testing.assert_array_equal(again.logits(audio), first.logits(audio))
    # a float32 load never uses it
    assert not _load(folder, quantize=False).quantized

    # a changed checkpoint (other weights): a new copy, other logits
    other = make_tiny_ctc_folder(tmp_path / "other", "base", seed=2)
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")
    changed = _load(folder, quantize=True)
    assert len(list(cache.glob("*.pt"))) == 2
    assert not np.array_equal(changed.logits(audio), first.logits(audio))

    # a damaged copy: one warning, rebuilt from the checkpoint, the same logits as a fresh quantisation
    for p in cache.glob("*.pt"):
        p.write_bytes(p.read_bytes()[: 1000])
    with caplog.at_level(logging.WARNING, logger="streamer.model.int8cache"):
        rebuilt = _load(folder, quantize=True)
    assert any("unusable" in r.message and "rebuilding" in r.message for r in caplog.records)
    np.testing.assert_array_equal(rebuilt.logits(audio), changed.logits(audio))
    assert _load(folder, quantize=True).quantized  # and the rebuilt copy loads


def test_int8_cache_key_covers_config(tmp_path, cache):
    from streamer.model import int8cache

    folder = make_tiny_ctc_folder(tmp_path / "tiny", "base", seed=1)
    a = int8cache.entry_for(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["ctc_zero_infinity"] = not cfg.get("ctc_zero_infinity", False)
    (folder / "config.json").write_text(json.dumps(cfg))
    b = int8cache.entry_for(folder)
    assert a is not None and b is not None and a.key != b.key


@pytest.mark.parametrize("family", ["base", "large"])  # group-norm and layer-norm conv encoders
def test_long_pass_in_pieces_equals_one_pass(tmp_path, family):
    from streamer.core.config import LONG_PASS_MIN_S

    ctc = _load(make_tiny_ctc_folder(tmp_path / family, family, seed=1), quantize=False, reuse_features=False)
    assert ctc._pieces is not None
    x = ctc.normalize(_audio(LONG_PASS_MIN_S + 4.1))
    pieces = ctc.forward(x)
    ctc._pieces = None
    whole = ctc.forward(x)
    assert pieces.shape == whole.shape
    np.testing.assert_allclose(pieces, whole, atol=1e-4)
    assert (pieces.argmax(-1) == whole.argmax(-1)).all()


def test_weight_norm_is_folded_once_with_the_same_logits(tmp_path, cache):
    """The positional convolution's weight norm is computed once at load (not at every window): nothing
    parametrised is left, and the logits equal the checkpoint's as transformers runs it (int8 from the
    checkpoint, int8 from the cache, float32)."""
    import torch
    from torch.nn.utils import parametrize
    from transformers import AutoModelForCTC

    from streamer.model.loading import fold_weight_norm

    folder = make_tiny_ctc_folder(tmp_path / "tiny", "base", seed=1)
    x = _audio(1.3)
    for quantize in (False, True, True):  # the second int8 load comes from the cache
        ctc = _load(folder, quantize=quantize, reuse_features=False, conv_bfloat16=False)  # as the checkpoint
        assert not any(parametrize.is_parametrized(m) for m in ctc.model.modules())
        reference = AutoModelForCTC.from_pretrained(str(folder)).eval()
        if quantize:
            reference = torch.ao.quantization.quantize_dynamic(reference, {torch.nn.Linear}, dtype=torch.qint8)
        assert parametrize.is_parametrized(reference.wav2vec2.encoder.pos_conv_embed.conv)
        with torch.inference_mode():
            expected = reference(torch.from_numpy(ctc.normalize(x))[None]).logits[0].numpy()
        np.testing.assert_array_equal(ctc.logits(x), expected)
        assert fold_weight_norm(reference) == 1
        with torch.inference_mode():
            np.testing.assert_array_equal(reference(torch.from_numpy(ctc.normalize(x))[None]).logits[0].numpy(), expected)


def test_group_sums_piece_by_piece_and_a_few_rows_at_a_time_equal_one_float64_sum(tmp_path, monkeypatch):
    """The group-norm sums of a long stretch are taken a piece and LONG_PASS_SUM_ROWS groups at a time (no
    float64 copy of the whole stretch): they equal one float64 sum over it, from any step to any step."""
    import torch

    from streamer.model import longpass

    ctc = _load(make_tiny_ctc_folder(tmp_path / "base", "base", seed=1), quantize=False, reuse_features=False)
    enc = ctc._pieces
    assert enc is not None and enc.kind == "group norm"
    groups = enc._gn.num_groups
    monkeypatch.setattr(longpass, "LONG_PASS_SUM_ROWS", 3)
    assert groups > 3, "the tiny model must have more groups than one block of rows"
    conv = enc._first.conv
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    x = torch.from_numpy(ctc.normalize(_audio(3.3)))[None]
    steps = enc.conv_steps(x.shape[-1])
    for step0, step1 in [(0, steps), (17, steps - 5), (40, 41)]:
        with torch.inference_mode():
            total, total_sq = enc.group_sums(x, step0, step1, piece_frames=7)
            h = conv(x[:, None, step0 * stride:(step1 - 1) * stride + kernel]).double().reshape(groups, -1)
        np.testing.assert_allclose(total.numpy(), h.sum(dim=1).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(total_sq.numpy(), (h * h).sum(dim=1).numpy(), rtol=1e-6, atol=1e-6)
    zero, zero_sq = enc.group_sums(x, 9, 9)
    assert not zero.any() and not zero_sq.any()
