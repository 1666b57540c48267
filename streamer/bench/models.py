"""The models the benchmark measures: the bundled demo model, and random-init models with the exact
configurations of wav2vec2-base and wav2vec2-large-lv60 (weights do not change compute, so speed and
latency measured on them hold for the real checkpoints; their text is meaningless)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: The base-960h vocabulary (token -> id), shared by every English wav2vec2 CTC checkpoint of that family.
BASE_960H_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAONIHSRDLUMWCFGYPBVK'XJQZ")
#: Random-init weights are drawn with this seed, so every machine benchmarks the same model.
INIT_SEED = 0
#: Spread of the random CTC-head bias: makes a random model emit letters (not only blanks), so stitching
#: and decoding do real work.
HEAD_BIAS_STD = 2.0


@dataclass(frozen=True)
class ModelSpec:
    key: str
    title: str
    #: Wav2Vec2Config overrides (None: not a random-init model).
    config: dict | None = None
    #: Feature-extractor settings of the real checkpoint.
    attention_mask: bool = False
    real_checkpoint: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def random_init(self) -> bool:
        return self.config is not None


SPECS: dict[str, ModelSpec] = {
    # group-norm feature encoder, 12 x 768 transformer
    "base": ModelSpec(
        "base", "wav2vec2-base (random init)", config={}, attention_mask=False,
        real_checkpoint="facebook/wav2vec2-base-960h"),
    # layer-norm feature encoder, 24 x 1024 transformer
    "large": ModelSpec(
        "large", "wav2vec2-large-lv60 (random init)",
        config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
        attention_mask=True, real_checkpoint="facebook/wav2vec2-large-960h-lv60-self"),
    # for tests of the harness only
    "tiny": ModelSpec(
        "tiny", "tiny layer-norm model (random init, smoke tests)",
        config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                    feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
        attention_mask=True),
    "demo": ModelSpec("demo", "demo model (assets/demo_model, trained on espeak-ng speech)"),
}


def cache_dir() -> Path:
    """Where generated models and audio are kept: $STREAMER_BENCH_CACHE or the user cache folder."""
    env = os.environ.get("STREAMER_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("streamer-bench")


def model_folder(key: str) -> str:
    """A name load_model() accepts for a benchmark model key (or a path/hub id passed through)."""
    spec = SPECS.get(key)
    if spec is None:
        return key
    if not spec.random_init:
        # STREAMER_BENCH_DEMO: another demo checkpoint folder (e.g. a newer one before it is bundled)
        return os.environ.get("STREAMER_BENCH_DEMO") or ("demo" if key == "demo" else key)
    folder = cache_dir() / "models" / key
    if not (folder / ".complete").exists():
        build_random_folder(spec, folder)
    return str(folder)


def build_random_folder(spec: ModelSpec, folder: Path) -> Path:
    """Save a random-init Wav2Vec2ForCTC of the spec's configuration with the base-960h vocabulary and the
    real checkpoint's feature-extractor settings, so it loads through load_model() like the real one."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(BASE_960H_VOCAB)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=spec.attention_mask)
    assert spec.config is not None, f"{spec.key} is not a random-init model"
    cfg = Wav2Vec2Config(vocab_size=len(BASE_960H_VOCAB), pad_token_id=0, architectures=["Wav2Vec2ForCTC"],
                         **spec.config)
    torch.manual_seed(INIT_SEED)
    model = Wav2Vec2ForCTC(cfg).eval()
    with torch.no_grad():
        model.lm_head.bias.normal_(0, HEAD_BIAS_STD)
    model.save_pretrained(tmp)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(tmp)
    (tmp / "BENCHMARK_MODEL.txt").write_text(
        f"{spec.title}: random weights (seed {INIT_SEED}) with the configuration of {spec.real_checkpoint or spec.key}."
        "\nFor compute and latency measurements only; its transcripts are meaningless.\n", encoding="utf-8")
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
