"""Models: loading any Hugging Face CTC checkpoint, inference on windows, the reference decode, optional
beam search. Importing this package does not import torch; loading a model does."""

from streamer.model.inference import CTCModel
from streamer.model.loading import demo_model_path, load_model
from streamer.model.reference import reference_decode, reference_text
from streamer.model.runtime import configure_openmp

__all__ = ["CTCModel", "configure_openmp", "demo_model_path", "load_model", "reference_decode", "reference_text"]
