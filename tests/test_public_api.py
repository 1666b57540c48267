"""The public API as its docstring shows it: `from streamer import ...`, the demo model, one clip."""

from pathlib import Path

import numpy as np
import pytest

import streamer
from streamer.model.reference import reference_text

CLIPS = Path(__file__).resolve().parents[1] / "assets" / "demo_clips"


def test_exports_are_importable_and_light():
    for name in streamer.__all__:
        assert hasattr(streamer, name), name


@pytest.mark.slow
def test_docstring_example_gives_the_offline_text_of_a_demo_clip():
    pytest.importorskip("torch")
    import soundfile as sf

    from streamer import AudioChunk, FinalEvent, Recognizer, load_model

    name, truth = (CLIPS / "references.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    audio, rate = sf.read(str(CLIPS / name), dtype="float32")
    assert rate == 16000
    model = load_model("demo")
    recognizer = Recognizer(model)
    events = recognizer.feed(AudioChunk(0, np.ascontiguousarray(audio), 16000)) + recognizer.finish()
    finals = [e.text for e in events if isinstance(e, FinalEvent)]
    offline = " ".join(reference_text(model.model, model.processor, audio).split())
    assert " ".join(finals) == offline, (finals, offline, truth)
