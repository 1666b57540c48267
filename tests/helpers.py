"""Shared test helpers: hand-built local models and tiny random HF checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streamer.core.decoding import Vocabulary
from streamer.core.windowing import FrameGeometry

LETTERS = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAONIHSRDLUMWCFGYPBVK'XJQZ")


class LocalModel:
    """A 'model' whose frame k depends only on the samples in its receptive field [320k, 320k + 400):
    the label is picked from a few quantised statistics of those samples, so streamed windows and one
    offline pass must give identical frames. Often blank, often repeating, so CTC collapse matters."""

    def __init__(self, vocab_size: int = len(LETTERS)) -> None:
        self.geometry = FrameGeometry.from_conv((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), 16000)
        self.vocabulary = Vocabulary(tuple(LETTERS[:vocab_size]), blank_id=0, word_delimiter="|")
        self.calls = 0

    def logits(self, audio: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        self.calls += 1
        g = self.geometry
        n = g.frames_in(len(audio))
        out = np.zeros((n, len(self.vocabulary)), dtype=np.float32)
        for k in range(n):
            seg = audio[k * g.stride_samples : k * g.stride_samples + g.receptive_field_samples]
            energy = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))
            bucket = int(energy * 40)  # slow-changing -> repeats
            kind = bucket % 4
            label = 0 if kind == 0 else 4 if kind == 1 else 5 + (bucket // 4) % (len(self.vocabulary) - 5)
            out[k, label] = 1.0
        return out


class ContextModel(LocalModel):
    """Like LocalModel, but every frame is scaled by the loudness of the whole input it is given, as a
    wav2vec2 model's normalisation and attention make a frame depend on its context: windows and one pass
    over the whole utterance disagree."""

    def logits(self, audio: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        rms = float(np.sqrt(np.mean(np.asarray(audio, np.float64) ** 2))) or 1.0
        return super().logits(np.asarray(audio, np.float32) * np.float32(0.15 / rms), start_sample)


def always_speech(_frame: bytes) -> bool:
    return True


def energy_speech(frame: bytes) -> bool:
    x = np.frombuffer(frame, dtype="<i2").astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(x**2))) > 0.02


def make_tiny_ctc_folder(folder: Path, family: str = "base", vocab: list[str] | None = None, seed: int = 0,
                         boost: list[str] = ()) -> Path:
    """Save a tiny random Wav2Vec2ForCTC + processor to `folder`. family 'base': group-norm feature encoder,
    no attention mask (like wav2vec2-base-960h); 'large': layer-norm + stable layer norm, attention mask
    (like wav2vec2-large-960h-lv60-self)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    folder.mkdir(parents=True, exist_ok=True)
    tokens = vocab or LETTERS
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    layer = family == "large"
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=layer)
    cfg = Wav2Vec2Config(
        vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if layer else "group", do_stable_layer_norm=layer, conv_bias=layer,
        pad_token_id=0, ctc_loss_reduction="mean",
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(cfg)
    with torch.no_grad():  # make the random head emit non-blank labels often enough to produce text
        model.lm_head.bias.normal_(0, 2.0)
        for tok in boost:  # make these tokens win often (e.g. umlauts, to test UTF-8 output)
            model.lm_head.bias[tokens.index(tok)] += 4.0
    model.save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# -- synthetic "speech" for the app-level tests (worker, session): the energy VAD and LocalModel ------------

SR = 16000


def speech_like(seed: int, seconds: float) -> np.ndarray:
    """Noise under a stepped envelope: loud enough for energy_speech throughout, and varied enough that
    LocalModel emits several letters."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = np.repeat(rng.uniform(0.1, 0.5, n // 800 + 1), 800)[:n]
    return (rng.normal(0, 1, n) * env).astype(np.float32)


def utterances(seed: int, count: int, speech_s: float = 1.2, pause_s: float = 1.0) -> np.ndarray:
    """`count` speech-like stretches, each after a pause, and a pause at the end: `count` VAD segments."""
    parts = []
    for i in range(count):
        parts += [np.zeros(int(pause_s * SR), np.float32), speech_like(seed + i, speech_s)]
    parts.append(np.zeros(int(pause_s * SR), np.float32))
    return np.concatenate(parts)


def energy_recognizer(model=None):
    """A Recognizer over `model` (default LocalModel) whose VAD is the energy threshold."""
    from streamer.core.config import Config, VadConfig
    from streamer.core.recognizer import Recognizer
    from streamer.core.vad import VadSegmenter

    cfg = Config(vad=VadConfig(confirm="off"))
    return Recognizer(model or LocalModel(), cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech))


def direct_finals(audio: np.ndarray) -> list[str]:
    """The finals' text of `audio` fed to energy_recognizer() in one chunk, no threads."""
    from streamer.core.events import AudioChunk, FinalEvent

    rec = energy_recognizer()
    events = rec.feed(AudioChunk(0, audio, SR)) + rec.finish()
    return [e.text for e in events if isinstance(e, FinalEvent)]


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class RecordingTyper:
    """A typing tool that records what it was asked to do (sinks.typing.Typer)."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def type_text(self, text):
        self.calls.append(("type", text))

    def press(self, chord):
        self.calls.append(("press", chord))

    def backspace(self, n):
        self.calls.append(("backspace", n))


class Recorder:
    """An event handler that keeps every event (worker and session tests)."""

    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def have_demo_model() -> bool:
    """Whether the bundled demo model is in this checkout (tests that need it skip otherwise)."""
    from streamer.errors import ModelLoadError
    from streamer.model import demo_model_path

    try:
        return demo_model_path().exists()
    except ModelLoadError:
        return False
