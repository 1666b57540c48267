"""The int8 copy of a checkpoint kept in the user cache, so a quantised model loads without its float32 weights.

Quantising on load needs every float32 weight resident once (the base-size model: 360 MB of weights on top of
the 340 MB that importing torch and transformers takes), which is most of the CLI's peak memory. After the
first run the quantised state (int8 linear layers, float32 for the rest: a third of the size) is saved under
`platformdirs.user_cache_dir("streamer")/int8`, named by the SHA-256 of the checkpoint's config and weights (and
the torch version and this format), so a changed checkpoint never meets a stale copy. Later runs build the
network on the meta device (no memory), put int8 layers in place of the linear ones and load the copy.

A copy that cannot be read or does not fit the network is removed with a warning and rebuilt from the
checkpoint; nothing here ever stops a model from loading. The hash of a weights file is remembered beside the
copies by its size and modification time, so an unchanged checkpoint is not read again on every start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Bumped when what is saved changes; part of the cache key.
CACHE_FORMAT = 1
#: STREAMER_CACHE_DIR, if set, replaces the user cache folder (tests, read-only homes).
CACHE_ENV = "STREAMER_CACHE_DIR"
#: Read size for hashing a weights file.
HASH_BLOCK_BYTES = 8 << 20


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root) / "int8"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("streamer")) / "int8"


@dataclass(frozen=True)
class CacheEntry:
    """Where the int8 copy of one checkpoint lives, and what it was made from."""

    path: Path
    key: str


def checkpoint_files(folder: Path) -> list[Path]:
    """The files whose content defines the network: config.json and the weights (as from_pretrained reads them)."""
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return [folder / "config.json", *weights]


def _file_sha256(path: Path, memo: dict[str, Any]) -> str:
    st = path.stat()
    real = str(path.resolve())
    seen = memo.get(real)
    if seen and seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns:
        return str(seen["sha256"])
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
    memo[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}
    return h.hexdigest()


def entry_for(folder: Path) -> CacheEntry | None:
    """The cache entry of a local checkpoint folder (None: no weights file, or the cache folder is unusable)."""
    import torch

    files = checkpoint_files(folder)
    if len(files) < 2 or not all(f.is_file() for f in files):
        return None
    root = cache_dir()
    memo_path = root / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8")) if memo_path.exists() else {}
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256(f"streamer-int8 {CACHE_FORMAT} torch {torch.__version__}\n".encode())
    try:
        for f in files:
            h.update(f.name.encode() + b"\0" + _file_sha256(f, memo).encode() + b"\n")
    except OSError:
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _atomic_write(memo_path, json.dumps(memo, indent=1).encode())
    except OSError:
        log.debug("cannot write %s", memo_path, exc_info=True)
    key = h.hexdigest()
    return CacheEntry(root / f"{key[:32]}.pt", key)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(entry: CacheEntry, model, n_parameters: int) -> None:
    """Keep the quantised model's state (best effort: a cache that cannot be written only costs memory)."""
    import torch

    tmp = None
    try:
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=entry.path.parent, prefix=entry.path.name, suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "wb") as f:  # straight to the file: no second copy in memory
            torch.save({"format": CACHE_FORMAT, "key": entry.key, "parameters": n_parameters,
                        "state_dict": model.state_dict()}, f)
        os.replace(tmp, entry.path)
        log.debug("int8 cache: wrote %s (%.0f MB)", entry.path, entry.path.stat().st_size / 2**20)
    except (OSError, RuntimeError) as exc:
        log.debug("int8 cache: cannot write %s: %s", entry.path, exc)
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def int8_skeleton(hf_config):
    """The CTC network of `hf_config` with no memory behind it (meta device) and int8 dynamic linear layers
    in place of the float32 ones, ready for `load_state_dict(..., assign=True)`."""
    import torch
    import torch.ao.nn.quantized.dynamic as nnqd
    from transformers import AutoModelForCTC

    with torch.device("meta"):
        model = AutoModelForCTC.from_config(hf_config)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    # a 1x1 stand-in: its packed weights are replaced by the saved ones on load
                    q = nnqd.Linear(1, 1, bias_=child.bias is not None, dtype=torch.qint8)
                q.in_features, q.out_features = child.in_features, child.out_features
                setattr(module, name, q)
    return model


def load(entry: CacheEntry, hf_config) -> tuple[Any, int] | None:
    """(int8 model in eval mode, the checkpoint's parameter count) from the cache, or None when there is no
    usable copy (a damaged one is removed, with a warning, and the caller rebuilds it)."""
    import torch

    if not entry.path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved = torch.load(entry.path, weights_only=True, map_location="cpu")
        if not isinstance(saved, dict) or saved.get("format") != CACHE_FORMAT or saved.get("key") != entry.key:
            raise ValueError("it was written for another checkpoint or format")
        saved_parameters = int(saved["parameters"])
        model = int8_skeleton(hf_config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_state_dict(saved.pop("state_dict"), strict=True, assign=True)
        del saved  # the int8 weights as read: their packed form is what the layers keep
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise ValueError(f"it lacks {len(left)} tensors ({left[0]}, ...)")
        return model.eval(), int(saved_parameters)
    except Exception as exc:  # a truncated or damaged file, another torch, a network that changed
        log.warning("the int8 copy of this model in the cache (%s) is unusable (%s): rebuilding it from the "
                    "checkpoint", entry.path, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        try:
            entry.path.unlink()
        except OSError:
            pass
        return None
