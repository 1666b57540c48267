"""Loading any Hugging Face CTC checkpoint (hub id, local folder, or the bundled demo model): where it comes
from, which device and dtype it runs with, int8 dynamic quantisation on CPU, and one-line errors for
everything that can be wrong with a checkpoint. Inference lives in streamer.model.inference."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from streamer.core.config import DEMO_MODEL_NAME, THREAD_CHOICE_WINDOW_S, ModelConfig
from streamer.errors import ModelLoadError, NoCTCHeadError
from streamer.model.inference import CTCModel
from streamer.model.language_model import find_language_model
from streamer.model.runtime import ThreadTuner, check_threads, choose_threads, release_free_memory, usable_cpus

#: Seconds to wait for the hub's address before calling it unreachable (instead of transformers' retries).
HUB_PROBE_TIMEOUT_S = 3.0
#: A hub repository id: "name" or "owner/name".
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def bundled_asset(*parts: str) -> Path:
    """A file under assets/: inside the installed package (streamer/assets), or in a source checkout."""
    package = Path(__file__).resolve().parents[1]
    for base in (package / "assets", package.parent / "assets"):
        p = base.joinpath(*parts)
        if p.exists():
            return p
    raise FileNotFoundError("/".join(parts))


def demo_model_path() -> Path:
    """The bundled demo model: inside the installed package, or assets/ of a source checkout."""
    try:
        folder = bundled_asset("demo_model", "config.json").parent
    except FileNotFoundError:
        raise ModelLoadError("the bundled demo model is missing from this installation",
                             "reinstall streamer, or pass a model folder with --model PATH") from None
    return folder


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


#: Files a CTC checkpoint needs from the hub (weights: safetensors preferred, else the PyTorch pickle; an
#: n-gram language model in the Wav2Vec2ProcessorWithLM layout when it ships one).
HUB_FILES = ["*.json", "*.txt", "*.safetensors", "language_model/*"]


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


#: Called with the name of each loading stage as it ends (the benchmark's memory report).
StageHook = Callable[[str], None]


def load_model(config: ModelConfig | str, warmup: bool = True, on_stage: StageHook | None = None) -> CTCModel:
    """Load a CTC model by hub id, local folder or 'demo' (a name, or a ModelConfig with its compute
    settings). Errors are one-line ModelLoadErrors. A CPU int8 model comes from its quantised copy in the user
    cache when there is one (streamer.model.int8cache), else from the checkpoint (and the copy is kept).
    `on_stage` is called after each stage: import, processor, weights, quantise, warm-up."""
    if isinstance(config, str):
        config = ModelConfig(name=config)
    stage = on_stage or (lambda name: None)
    config.validate()
    check_threads(config.threads)
    device = pick_device(config.device)
    source = resolve_source(config.name)
    import transformers

    stage("import")
    where = str(source.path) if source.is_local else config.name
    # a hub model is downloaded (with its progress bars) and loaded from the local snapshot
    target = str(source.path) if source.is_local else _fetch(config.name)
    transformers.utils.logging.disable_progress_bar()  # no bars for loading local weights
    processor = _load_processor(target, where)
    stage("processor")
    dtype = pick_dtype(config.dtype, device)
    cached = _from_int8_cache(target, config, device, dtype)
    if cached is not None:
        model, n_parameters, entry = cached
        quantized = True
        stage("weights (int8 cache)")
    else:
        model = _load_weights(target, where, processor)
        n_parameters = sum(p.numel() for p in model.parameters())  # before quantising
        stage("weights")
        model, quantized = _place(model, config, device, dtype, n_parameters)
        stage("quantise" if quantized else "place")
        entry = _int8_entry(target, device, dtype, config) if quantized else None
        if entry is not None:
            from streamer.model import int8cache

            int8cache.save(entry, model, n_parameters)
            stage("int8 cache written")
    release_free_memory()  # the weights as read (float32 or the int8 copy), before folding adds its own: a lower peak
    fold_weight_norm(model)  # after the int8 copy was saved: the cache keeps the checkpoint's layout
    conv_bf16 = _wants_conv_bfloat16(config, device, quantized) and bfloat16_conv_layers(model) > 0
    ctc = CTCModel(model, processor, config.name, device, dtype, quantized, config, parameters=n_parameters,
                   language_model_dir=find_language_model(Path(target)))
    ctc.conv_bfloat16 = conv_bf16
    release_free_memory()  # what folding and the bf16 convolutions freed (the weight norm's parts, float32 convs)
    if warmup:
        ctc.warmup()
        release_free_memory()  # its activations, before the thread-count trials make their own
        stage("warm-up")
    if device == "cpu":
        ctc.tuner = _thread_choice(ctc, config, measure=warmup)
        release_free_memory()  # the thread-count trials' activations
        stage("threads")
    return ctc


def _thread_choice(ctc: CTCModel, config: ModelConfig, measure: bool) -> ThreadTuner:
    """--threads N: N, fixed. 0 (auto): the fastest count on a window of THREAD_CHOICE_WINDOW_S now (when
    the model was warmed up; else torch's default, capped at the usable CPUs), then tuned at run time."""
    import torch

    cpus = usable_cpus()
    if config.threads:
        torch.set_num_threads(config.threads)
        return ThreadTuner(cpus, config.threads, fixed=True)
    if not measure:
        threads = min(torch.get_num_threads(), cpus)
        torch.set_num_threads(threads)
        return ThreadTuner(cpus, threads)
    import numpy as np

    window = np.random.default_rng(1).normal(0, 0.1, int(THREAD_CHOICE_WINDOW_S * ctc.sample_rate))
    x = ctc.normalize(window.astype(np.float32))
    return ThreadTuner(cpus, choose_threads(lambda: ctc.forward(x), cpus))


def _int8_entry(target: str, device: str, dtype, config: ModelConfig):
    """The int8 cache entry of a local checkpoint run as int8 on CPU (None: not that case, or no cache)."""
    import torch

    if device != "cpu" or dtype != torch.float32 or config.quantize is False:
        return None
    from streamer.model import int8cache

    try:
        return int8cache.entry_for(Path(target))
    except OSError:
        return None


def _from_int8_cache(target: str, config: ModelConfig, device: str, dtype):
    """(model, parameters, entry) from the int8 cache when this load would quantise and a copy is there."""
    entry = _int8_entry(target, device, dtype, config)
    if entry is None or not entry.path.is_file():
        return None
    from transformers import AutoConfig

    from streamer.model import int8cache

    loaded = int8cache.load(entry, AutoConfig.from_pretrained(target))
    if loaded is None:
        return None
    model, n_parameters = loaded
    if config.quantize is None and n_parameters < config.quantize_min_parameters:
        return None  # a copy made with --quantize; auto leaves this model in float32
    return model, n_parameters, entry


def _load_processor(target: str, where: str):
    """The checkpoint's config (a wav2vec2-style CTC model?) and its processor (tokenizer + features)."""
    from transformers import AutoConfig, AutoProcessor

    config_file = Path(target) / "config.json"
    try:
        hf_config = AutoConfig.from_pretrained(target)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {where!r}: {_first_line(exc)}",
                             "check the hub id or folder, or use --model demo") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{where} is not a model transformers can load: {_first_line(exc)}") from exc
    except Exception as exc:  # a value of the wrong type (StrictDataclassFieldValidationError), bad JSON ...
        why = _last_line(exc).removeprefix("TypeError: ").removeprefix("ValueError: ").split(". Errors:")[0]
        raise ModelLoadError(f"{config_file} is not a valid model config: {why}",
                             "fix that value, or download / save the model again") from exc
    _check_ctc_head(hf_config, where)
    if getattr(hf_config, "conv_stride", None) is None:
        raise ModelLoadError(f"{where} is a {hf_config.model_type} model, not a wav2vec2-style CTC model",
                             "use a wav2vec2 / HuBERT / WavLM CTC checkpoint")
    try:
        if find_language_model(Path(target)) is not None:
            # a Wav2Vec2ProcessorWithLM checkpoint: its tokenizer and features only (AutoProcessor would
            # load the n-gram model through pyctcdecode, or fail without it); beam.py decodes with the LM
            from transformers import AutoFeatureExtractor, AutoTokenizer, Wav2Vec2Processor

            processor = Wav2Vec2Processor(feature_extractor=AutoFeatureExtractor.from_pretrained(target),
                                          tokenizer=AutoTokenizer.from_pretrained(target))
        else:
            processor = AutoProcessor.from_pretrained(target)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{where} has no usable CTC processor/vocabulary (vocab.json, preprocessor_config.json)",
                             "use a fine-tuned CTC checkpoint that ships its tokenizer") from exc
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "feature_extractor"):
        raise ModelLoadError(f"{where} has no CTC tokenizer and feature extractor",
                             "use a fine-tuned CTC checkpoint that ships vocab.json and preprocessor_config.json")
    special = set(getattr(processor.tokenizer, "all_special_tokens", ()))
    if not [t for t in processor.tokenizer.get_vocab() if t not in special]:
        raise ModelLoadError(f"the vocabulary of {where} ({Path(target) / 'vocab.json'}) has no tokens besides "
                             "the special ones, so nothing could ever be transcribed",
                             "use the vocab.json the model was trained with")
    return processor


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


def _weights_file(target: str) -> Path:
    """The weights file from_pretrained reads (safetensors first, as transformers does), for messages."""
    folder = Path(target)
    for pattern in ("model.safetensors", "*.safetensors", "pytorch_model.bin", "*.bin"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return folder


def _load_weights(target: str, where: str, processor):
    """The CTC network in eval mode; a checkpoint without a CTC head or with a head smaller than the
    tokenizer is refused."""
    from transformers import AutoModelForCTC

    try:
        model, info = AutoModelForCTC.from_pretrained(target, output_loading_info=True)
    except OSError as exc:
        first = str(exc).splitlines()[0]
        if "flax" in str(exc).lower() or "msgpack" in str(exc).lower():
            raise NoCTCHeadError(f"{where} has only Flax weights and no PyTorch CTC model",
                                 "use a fine-tuned PyTorch CTC checkpoint, or --model demo") from exc
        raise ModelLoadError(f"cannot load the weights of {where}: {first}") from exc
    except MemoryError as exc:
        raise ModelLoadError(f"not enough memory to load {where}", "close other programs or use a smaller model") from exc
    except Exception as exc:  # a damaged safetensors file, a refused pickle, a config the weights do not fit
        weights = _weights_file(target)
        text = str(exc)
        if "weights only load failed" in text.lower() or "weights_only" in text:
            raise ModelLoadError(
                f"{weights} is a pickle checkpoint holding more than tensors, which torch refuses to load "
                "(weights_only: loading it could run code)",
                "convert it to safetensors where you trust it (save_pretrained(..., safe_serialization=True)), "
                "or use a safetensors checkpoint") from exc
        if type(exc).__name__ == "SafetensorError" or weights.suffix == ".safetensors" and "header" in text.lower():
            raise ModelLoadError(f"{weights} is damaged or incomplete ({_first_line(exc)})",
                                 "download or save the model again") from exc
        raise ModelLoadError(f"cannot load the weights of {where} from {weights.name}: {_first_line(exc)}",
                             "check that the weights match config.json, or download / save the model again") from exc
    missing = [k for k in info.get("missing_keys", []) if "lm_head" in k]
    if missing:
        raise NoCTCHeadError(f"{where} has no CTC head (its weights lack lm_head)",
                             "streamer needs a model fine-tuned for CTC, e.g. facebook/wav2vec2-base-960h or --model demo")
    vocab_size = len(processor.tokenizer)
    if model.config.vocab_size < len(processor.tokenizer.get_vocab()):
        raise ModelLoadError(f"{where}: the tokenizer has {vocab_size} tokens but the CTC head only {model.config.vocab_size}")
    return model.eval()


def _wants_conv_bfloat16(config: ModelConfig, device: str, quantized: bool) -> bool:
    """ModelConfig.conv_bfloat16 resolved: asked for, or auto on an int8 CPU model where bf16 is native."""
    if device != "cpu" or not quantized:
        return False
    if config.conv_bfloat16 is not None:
        return config.conv_bfloat16
    from streamer.model.runtime import cpu_has_native_bf16

    return cpu_has_native_bf16()


def bfloat16_conv_layers(model) -> int:
    """Run the convolutions of a wav2vec2-family feature encoder in bfloat16: weights stored in bf16, each
    conv's input cast to bf16 and its output back to float32, so the norms, GELU and everything after stay
    float32 and callers (feature reuse, long passes) see float32 as before. Returns how many were changed
    (0: no such encoder). After the int8 cache is written, so the cache keeps the checkpoint's float32."""
    import torch

    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(getattr(base, "feature_extractor", None), "conv_layers", None)
    n = 0
    for layer in layers if layers is not None else ():
        conv = getattr(layer, "conv", None)
        if not isinstance(conv, torch.nn.Conv1d):
            continue
        conv.to(torch.bfloat16)

        def forward(x, conv=conv, inner=torch.nn.Conv1d.forward):
            return inner(conv, x.to(torch.bfloat16)).float()

        conv.forward = forward  # type: ignore[method-assign]
        n += 1
    return n


def fold_weight_norm(model) -> int:
    """Compute each weight-normed weight (wav2vec2's positional convolution: 768 x 48 x 128 float32, 19 MB)
    once, in place of the parametrisation that recomputed it from its direction and length at every forward
    pass: the same weight, without a fresh 19 MB tensor and its computation at every window. Returns how many
    were folded."""
    import torch
    from torch.nn.utils import parametrize

    folded = 0
    with torch.no_grad():
        for module in list(model.modules()):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
                folded += 1
    return folded


def _place(model, config: ModelConfig, device: str, dtype, n_parameters: int):
    """int8 dynamic quantisation of the linear layers in place (CPU, float32, large enough or asked for), then
    device and dtype. Returns (model, quantized)."""
    import torch

    quantized = False
    if device == "cpu":
        want_int8 = config.quantize if config.quantize is not None else n_parameters >= config.quantize_min_parameters
        if want_int8 and dtype == torch.float32:
            import warnings

            with warnings.catch_warnings():  # torch >= 2.10 points to torchao; the eager API still works
                warnings.simplefilter("ignore")
                # in place: a copy would hold the float32 network twice (the default deep-copies it)
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8,
                                                               inplace=True)
            quantized = True
    if dtype != torch.float32 or device != "cpu":
        model = model.to(device=device, dtype=dtype)
    return model, quantized
