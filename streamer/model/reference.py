"""The reference (offline) decode: the Hugging Face tutorial decode of a whole recording (processor, one
forward pass, argmax, batch_decode). The CLI's --offline, the benchmark's baselines, the tools and the tests
all compare streamed text with this one function."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.core.config import MODEL_SAMPLE_RATE


@dataclass(frozen=True)
class ReferenceDecode:
    text: str
    #: Logits [frames, vocab] as float32, and the greedy label of each frame.
    logits: np.ndarray
    labels: np.ndarray


def reference_decode(model, processor, audio: np.ndarray) -> ReferenceDecode:
    """Decode 16 kHz mono `audio` as the transformers documentation does, on the model's own device and
    dtype (a quantised model keeps its int8 linears)."""
    import torch

    inputs = processor(audio, sampling_rate=MODEL_SAMPLE_RATE, return_tensors="pt")
    param = next(model.parameters())
    inputs = {k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device))
              for k, v in inputs.items()}
    with torch.inference_mode():
        logits = model(**inputs).logits
    ids = torch.argmax(logits, dim=-1)
    return ReferenceDecode(processor.batch_decode(ids)[0], logits[0].float().cpu().numpy(), ids[0].cpu().numpy())


def reference_text(model, processor, audio: np.ndarray) -> str:
    return reference_decode(model, processor, audio).text
