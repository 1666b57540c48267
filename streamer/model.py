"""Loading any Hugging Face CTC checkpoint (hub id, local folder, or the bundled demo model) and running it
on windows of 16 kHz audio: device and dtype choice, input normalisation as the processor does it,
attention masks only for models that expect them, int8 dynamic quantisation, warm-up."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from streamer.config import DEMO_MODEL_NAME, MODEL_SAMPLE_RATE, OMP_WAIT_POLICY, ModelConfig
from streamer.decoding import Vocabulary
from streamer.errors import ModelLoadError, NoCTCHeadError
from streamer.windowing import FrameGeometry

log = logging.getLogger(__name__)

#: Seconds to wait for the hub's address before calling it unreachable (instead of transformers' retries).
HUB_PROBE_TIMEOUT_S = 3.0
#: Audio used for the warm-up pass (long enough to hit every kernel the windows will use).
WARMUP_S = 2.0
#: A hub repository id: "name" or "owner/name".
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
#: The processor's variance floor in zero-mean unit-variance normalisation.
NORM_EPS = 1e-7


def _set_openmp_wait_policy() -> None:
    """torch's OpenMP runtime reads OMP_WAIT_POLICY once, when torch is first imported, so it is set here,
    before any import of torch (a value already in the environment wins; STREAMER_OMP_WAIT_POLICY, even
    empty, overrides the default, for the benchmark's thread study)."""
    import sys

    policy = os.environ.get("STREAMER_OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    if policy and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)


_set_openmp_wait_policy()


def demo_model_path() -> Path:
    """The bundled demo model: inside the installed package, or assets/ of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "assets" / "demo_model", here.parent / "assets" / "demo_model"):
        if (candidate / "config.json").exists():
            return candidate
    raise ModelLoadError("the bundled demo model is missing from this installation",
                         "reinstall streamer, or pass a model folder with --model PATH")


def bundled_asset(*parts: str) -> Path:
    here = Path(__file__).resolve().parent
    for base in (here / "assets", here.parent / "assets"):
        p = base.joinpath(*parts)
        if p.exists():
            return p
    raise FileNotFoundError("/".join(parts))


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a local folder or a hub id."""

    name: str
    path: Path | None

    @property
    def is_local(self) -> bool:
        return self.path is not None


def resolve_source(name: str) -> ModelSource:
    if name == DEMO_MODEL_NAME:
        return ModelSource(name, demo_model_path())
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"model path {p} is a file, not a model folder",
                                 "pass a folder with config.json and the weights, a hub id, or 'demo'")
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{p} is not a Hugging Face model folder (no config.json)",
                                 "pass a folder saved with save_pretrained, a hub id, or 'demo'")
        return ModelSource(name, p)
    if not HUB_ID.fullmatch(name):
        raise ModelLoadError(f"model folder not found: {name}",
                             "check the path, pass a hub id such as facebook/wav2vec2-base-960h, or use --model demo")
    return ModelSource(name, None)


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    port = urlparse(endpoint).port or 443
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _is_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:
        return False


#: Files a CTC checkpoint needs from the hub (weights: safetensors preferred, else the PyTorch pickle).
HUB_FILES = ["*.json", "*.txt", "*.safetensors"]


def _fetch(repo_id: str) -> str:
    """Download (or find in the cache) what a hub CTC checkpoint needs; returns the local snapshot folder."""
    from huggingface_hub import snapshot_download

    reachable = _hub_reachable()
    if not reachable and not _is_cached(repo_id):
        raise ModelLoadError(
            f"cannot fetch model {repo_id!r}: the Hugging Face hub is not reachable and it is not in the local cache",
            "pass a local model folder with --model PATH, or --model demo for the bundled demo model",
        )
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=not reachable))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES + ["pytorch_model.bin"],
                                            local_files_only=not reachable))
    except Exception as exc:  # RepositoryNotFoundError, GatedRepoError, HTTP and cache errors
        name = type(exc).__name__
        if "NotFound" in name or "401" in str(exc) or "404" in str(exc):
            raise ModelLoadError(f"model {repo_id!r} was not found on the Hugging Face hub",
                                 "check the id, or pass a local folder / --model demo") from exc
        raise ModelLoadError(f"cannot fetch model {repo_id!r}: {str(exc).splitlines()[0] if str(exc) else name}",
                             "check your connection, or pass a local folder / --model demo") from exc
    if not (folder / "config.json").exists():
        raise ModelLoadError(f"hub repository {repo_id!r} has no config.json", "it is not a transformers model")
    return str(folder)


def _check_ctc_head(config, where: str) -> None:
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(a.endswith("ForCTC") for a in archs):
        raise NoCTCHeadError(
            f"{where} has no CTC head (it is a {', '.join(archs)} checkpoint)",
            "streamer needs a model fine-tuned for CTC speech recognition, e.g. facebook/wav2vec2-base-960h or --model demo",
        )


def _reusing_encoder(inner, stride_samples: int):
    """Wrap a model's convolutional feature encoder so that frames already computed for the previous
    window are prepended and only the audio of the new frames goes through the convolutions. Before a
    forward pass set `.cached` to a tensor [batch, channels, k] holding the window's first k frames (None:
    a plain pass); after it `.last_output` holds all the window's frames."""
    import torch

    class ReusingFeatureEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.stride_samples = stride_samples
            self.cached = None
            self.last_output = None

        def forward(self, input_values):
            cached, self.cached = self.cached, None
            if cached is None or cached.shape[-1] == 0:
                out = self.inner(input_values)
            else:
                rest = input_values[..., cached.shape[-1] * self.stride_samples:]
                out = torch.cat([cached, self.inner(rest)], dim=-1)
            self.last_output = out
            return out

    return ReusingFeatureEncoder()


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


def _held_group_norm(gn):
    """Wrap a GroupNorm so that it can normalise with statistics held from an earlier window (`.held`, a
    pair of per-group mean and variance tensors) instead of the input's own; then it is a per-channel
    affine map and the conv encoder around it is local. With `.held` None it is the plain GroupNorm."""
    import torch

    class HeldGroupNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gn = gn
            self.held = None

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


def _first_conv_has_bias(encoder) -> bool:
    import torch

    for module in encoder.modules():
        if isinstance(module, torch.nn.Conv1d):
            return module.bias is not None
    return False


@dataclass(frozen=True)
class NormStats:
    """Zero-mean unit-variance statistics an input window was normalised with."""

    mean: float
    std: float

    def drift(self, other: "NormStats") -> float:
        """Relative change from self to other (of the scale, and of the mean in units of the scale)."""
        return max(abs(other.std / self.std - 1.0), abs(other.mean - self.mean) / self.std)


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


class _Utterance:
    """State of a run of overlapping windows (one utterance): running sums of its audio, the statistics in
    use, and the cached conv features of the last window. Owned by the thread that calls CTCModel.logits."""

    def __init__(self, start_sample: int, audio: np.ndarray) -> None:
        a = audio.astype(np.float64)
        self.n, self.s1, self.s2 = len(a), float(a.sum()), float(np.dot(a, a))
        self.start_sample = start_sample
        self.end_sample = start_sample + len(audio)
        self.stats: NormStats | None = None
        self.group_norm = None  # held (mean, variance) per group of the first conv layer's GroupNorm
        self.features = None  # tensor [1, channels, frames] of the last window
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


class CTCModel:
    """A loaded CTC model: frames of logits for windows of 16 kHz audio.

    Feature reuse (`ModelConfig.reuse_features`): overlapping windows of one utterance share most of their
    audio. Where the conv feature encoder is local — frame k depends only on samples [320k, 320k + 400) of
    the normalised input, as in layer-norm encoders — the frames the previous window computed are exact for
    the new one, provided both windows were normalised with the same statistics; only the new frames go
    through the convolutions. So the input statistics are held while they stay within `norm_tolerance` of
    the current ones (the window's own, or the running utterance statistics: `norm_stats`) and the window
    is recomputed from scratch with fresh statistics when they drift further. Given the statistics in use,
    reused logits equal a full forward pass (tests/test_feature_reuse.py); how much holding them changes the
    text is measured in BENCHMARKS.md.

    A group-norm encoder (wav2vec2-base) normalises each channel of its first conv layer over the whole
    window, so no frame is local. With `reuse_group_norm` the same idea is applied one level down: the
    group-norm statistics (and the input statistics) are held within `norm_tolerance` of the current
    window's, the first layer becomes a per-channel affine map, and the encoder is local given them. The
    current statistics are checked each window with the first conv layer alone (a few percent of the conv
    cost). Off by default: its fidelity cost can only be measured on a trained group-norm checkpoint."""

    def __init__(self, model, processor, name: str, device: str, dtype, quantized: bool,
                 config: ModelConfig | None = None, parameters: int | None = None) -> None:
        import torch

        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.dtype = dtype
        self.quantized = quantized
        cfg = model.config
        fe = processor.feature_extractor
        self.sample_rate = int(getattr(fe, "sampling_rate", MODEL_SAMPLE_RATE))
        if self.sample_rate != MODEL_SAMPLE_RATE:
            raise ModelLoadError(f"{name} expects {self.sample_rate} Hz audio; streamer feeds {MODEL_SAMPLE_RATE} Hz",
                                 "use a 16 kHz CTC model")
        self.geometry = FrameGeometry.from_conv(tuple(cfg.conv_kernel), tuple(cfg.conv_stride), self.sample_rate)
        self.vocabulary = Vocabulary.from_tokenizer(processor.tokenizer)
        self.do_normalize = bool(getattr(fe, "do_normalize", True))
        self.use_attention_mask = bool(getattr(fe, "return_attention_mask", False))
        self.feat_extract_norm = getattr(cfg, "feat_extract_norm", "group")
        #: The checkpoint's parameter count (pass it for a quantised model: packed int8 linears leave parameters()).
        self.parameters = parameters if parameters is not None else sum(p.numel() for p in model.parameters())
        self._torch = torch
        self.compute_s_total = 0.0
        self.config = config or ModelConfig(name=name)
        self.counters = ReuseCounters()
        #: The statistics the last window was normalised with (None: its own, as the processor does).
        self.last_stats: NormStats | None = None
        self._utterance: _Utterance | None = None
        self._encoder = None
        base = getattr(model, "base_model", None)
        inner = getattr(base, "feature_extractor", None)
        self.feature_encoder_local = inner is not None and feature_encoder_is_local(inner)
        #: Do the conv features depend on the input statistics? Not behind a group norm (it removes any
        #: offset and scale per channel), nor without normalisation; yes behind a layer norm after a conv
        #: with a bias (the bias is added before the per-frame norm).
        self.features_depend_on_stats = (self.do_normalize and self.feature_encoder_local
                                         and inner is not None and _first_conv_has_bias(inner))
        self._first_conv = None
        self._held_gn = None
        reuse = "off"
        if inner is not None and self.config.reuse_features:
            if self.feature_encoder_local:
                reuse = "local"
            elif self.config.reuse_group_norm and (found := _first_layer_group_norm(inner)) is not None:
                first, gn = found
                self._first_conv = first.conv
                self._held_gn = first.layer_norm = _held_group_norm(gn)
                reuse = "held group norm"
        if reuse != "off":
            self._encoder = _reusing_encoder(inner, self.geometry.stride_samples)
            base.feature_extractor = self._encoder
        #: off | local (exact given the input statistics) | held group norm (exact given the held statistics)
        self.reuse_mode = reuse

    @property
    def description(self) -> str:
        kind = "int8" if self.quantized else str(self.dtype).replace("torch.", "")
        return f"{self.name} ({self.parameters / 1e6:.1f} M params, {self.device}, {kind})"

    def normalize(self, audio: np.ndarray, stats: NormStats | None = None) -> np.ndarray:
        """What the processor does to one unpadded input: zero mean, unit variance (when configured); with
        `stats`, those statistics instead of the input's own."""
        audio = np.asarray(audio, dtype=np.float32)
        if not self.do_normalize:
            return audio
        if stats is None:
            return ((audio - audio.mean()) / np.sqrt(audio.var() + NORM_EPS)).astype(np.float32)
        return ((audio - np.float32(stats.mean)) / np.float32(stats.std)).astype(np.float32)

    @staticmethod
    def window_stats(audio: np.ndarray) -> NormStats:
        a = np.asarray(audio, dtype=np.float32)
        return NormStats(float(a.mean()), float(np.sqrt(a.var() + NORM_EPS)))

    def reset(self) -> None:
        """Forget cached features and statistics (the next window starts a new utterance)."""
        self._utterance = None

    def logits(self, audio: np.ndarray, start_sample: int | None = None) -> np.ndarray:
        """Logits [frames, vocab] (float32) for one window of 16 kHz mono audio starting at absolute sample
        `start_sample` (a multiple of the stride). Windows of one utterance overlap; with a start sample,
        conv features of the previous window are reused where that is allowed (see the class notes)."""
        t0 = time.perf_counter()
        audio = np.asarray(audio, dtype=np.float32)
        if self._encoder is None or start_sample is None:
            self.last_stats = None
            out = self._forward(self.normalize(audio))
            if self._encoder is not None:
                self._encoder.last_output = None
        else:
            out = self._reusing_logits(audio, start_sample)
        self.compute_s_total += time.perf_counter() - t0
        return out

    def _forward(self, x: np.ndarray, cached=None) -> np.ndarray:
        torch = self._torch
        xt = torch.from_numpy(x)[None].to(self.device)
        if self.dtype != torch.float32:
            xt = xt.to(self.dtype)
        kwargs = {}
        if self.use_attention_mask:
            kwargs["attention_mask"] = torch.ones(xt.shape, dtype=torch.long, device=self.device)
        if self._encoder is not None:
            self._encoder.cached = cached
        try:
            with torch.inference_mode():
                return self.model(xt, **kwargs).logits[0].float().cpu().numpy()
        finally:
            if self._encoder is not None:
                self._encoder.cached = None

    def _reusing_logits(self, audio: np.ndarray, start_sample: int) -> np.ndarray:
        g = self.geometry
        if start_sample % g.stride_samples:
            raise ValueError(f"window start {start_sample} is not on the {g.stride_samples}-sample frame grid")
        first_frame = start_sample // g.stride_samples
        n_frames = g.frames_in(len(audio))
        utt = self._utterance
        if utt is not None and utt.start_sample <= start_sample <= utt.end_sample:
            utt.extend(start_sample, audio)
        else:
            utt = self._utterance = _Utterance(start_sample, audio)
        if self._held_gn is not None:
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
            cached = cached[..., :reused]
        try:
            out = self._forward(self.normalize(audio, stats), cached)
        finally:
            if self._held_gn is not None:
                self._held_gn.held = None  # plain GroupNorm for anyone else calling the model
        utt.features = self._encoder.last_output
        self._encoder.last_output = None
        utt.first_frame = first_frame
        self.counters.windows += 1
        self.counters.frames_total += n_frames
        self.counters.frames_reused += reused
        return out

    def _current_stats(self, utt: _Utterance, audio: np.ndarray) -> NormStats:
        return utt.running_stats() if self.config.norm_stats == "utterance" else self.window_stats(audio)

    def _restart(self, utt: _Utterance) -> None:
        if utt.features is not None:
            self.counters.restarts += 1
        utt.features = None

    def _hold_group_norm(self, utt: _Utterance, audio: np.ndarray) -> NormStats:
        """Input statistics and first-layer group-norm statistics for this window: the held ones while the
        window's own group-norm statistics stay within tolerance (mean over groups of the relative change of
        scale and of offset), else fresh ones from this window (and the cache is dropped)."""
        torch = self._torch

        def gn_stats(stats: NormStats):
            x = torch.from_numpy(self.normalize(audio, stats))[None, None].to(self.device, self.dtype)
            with torch.inference_mode():
                return group_norm_stats(self._first_conv(x), self._held_gn.gn.num_groups)

        if utt.stats is not None and utt.group_norm is not None:
            mean, var = gn_stats(utt.stats)
            h_mean, h_var = utt.group_norm
            h_std = torch.sqrt(h_var + self._held_gn.gn.eps)
            drift = torch.maximum((torch.sqrt(var + self._held_gn.gn.eps) / h_std - 1).abs(), (mean - h_mean).abs() / h_std)
            if float(drift.mean()) <= self.config.norm_tolerance:
                self._held_gn.held = utt.group_norm
                return utt.stats
        self._restart(utt)
        utt.stats = self._current_stats(utt, audio)
        utt.group_norm = gn_stats(utt.stats)
        self._held_gn.held = utt.group_norm
        return utt.stats

    def warmup(self) -> float:
        """One pass on silence-plus-noise so the first real window is not slow; returns seconds taken."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        self.logits(rng.normal(0, 0.01, int(WARMUP_S * self.sample_rate)).astype(np.float32))
        self.compute_s_total = 0.0
        return time.perf_counter() - t0


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError("--device cuda was asked for but no CUDA GPU is available to torch",
                                 "use --device cpu (or auto)")
        return "cuda"
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def pick_dtype(requested: str, device: str):
    """auto: float16 on CUDA, float32 on CPU; or the named dtype."""
    import torch

    if requested == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[requested]


def load_model(config: ModelConfig, warmup: bool = True) -> CTCModel:
    """Load a CTC model by hub id, local folder or 'demo'. Errors are one-line ModelLoadErrors."""
    config.validate()
    device = pick_device(config.device)
    source = resolve_source(config.name)
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCTC, AutoProcessor

    where = str(source.path) if source.is_local else config.name
    if source.is_local:
        target = str(source.path)
    else:
        target = _fetch(config.name)  # hub download with its progress bars, then load from the local snapshot
    transformers.utils.logging.disable_progress_bar()  # no bars for loading local weights
    try:
        hf_config = AutoConfig.from_pretrained(target)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {where!r}: {str(exc).splitlines()[0]}",
                             "check the hub id or folder, or use --model demo") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{where} is not a model transformers can load: {str(exc).splitlines()[0]}") from exc
    _check_ctc_head(hf_config, where)
    if getattr(hf_config, "conv_stride", None) is None:
        raise ModelLoadError(f"{where} is a {hf_config.model_type} model, not a wav2vec2-style CTC model",
                             "use a wav2vec2 / HuBERT / WavLM CTC checkpoint")
    try:
        processor = AutoProcessor.from_pretrained(target)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{where} has no usable CTC processor/vocabulary (vocab.json, preprocessor_config.json)",
                             "use a fine-tuned CTC checkpoint that ships its tokenizer") from exc
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "feature_extractor"):
        raise ModelLoadError(f"{where} has no CTC tokenizer and feature extractor",
                             "use a fine-tuned CTC checkpoint that ships vocab.json and preprocessor_config.json")
    dtype = pick_dtype(config.dtype, device)
    try:
        model, info = AutoModelForCTC.from_pretrained(target, output_loading_info=True)
    except OSError as exc:
        first = str(exc).splitlines()[0]
        if "flax" in str(exc).lower() or "msgpack" in str(exc).lower():
            raise NoCTCHeadError(f"{where} has only Flax weights and no PyTorch CTC model",
                                 "use a fine-tuned PyTorch CTC checkpoint, or --model demo") from exc
        raise ModelLoadError(f"cannot load the weights of {where}: {first}") from exc
    missing = [k for k in info.get("missing_keys", []) if "lm_head" in k]
    if missing:
        raise NoCTCHeadError(f"{where} has no CTC head (its weights lack lm_head)",
                             "streamer needs a model fine-tuned for CTC, e.g. facebook/wav2vec2-base-960h or --model demo")
    vocab_size = len(processor.tokenizer)
    if model.config.vocab_size < len(processor.tokenizer.get_vocab()):
        raise ModelLoadError(f"{where}: the tokenizer has {vocab_size} tokens but the CTC head only {model.config.vocab_size}")
    model.eval()
    n_parameters = sum(p.numel() for p in model.parameters())  # before quantising
    quantized = False
    if device == "cpu":
        if config.threads:
            torch.set_num_threads(config.threads)
        want_int8 = config.quantize if config.quantize is not None else n_parameters >= config.quantize_min_parameters
        if want_int8 and dtype == torch.float32:
            import warnings

            with warnings.catch_warnings():  # torch >= 2.10 points to torchao; the eager API still works
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            quantized = True
    if dtype != torch.float32 or device != "cpu":
        model = model.to(device=device, dtype=dtype)
    ctc = CTCModel(model, processor, config.name, device, dtype, quantized, config, parameters=n_parameters)
    if warmup:
        ctc.warmup()
    return ctc
