"""tools/eval_demo_model.py: the held-out evaluation of the demo model decodes in padded batches."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "demo_model"
CLIPS = ROOT / "assets" / "demo_clips"


def _references() -> list[tuple[str, str]]:
    lines = (CLIPS / "references.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line.strip()]


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32")
    assert sr == 16000 and audio.ndim == 1, f"{path.name}: expected 16 kHz mono"
    return audio


@pytest.fixture(scope="module")
def asr():
    transformers = pytest.importorskip("transformers")
    from streamer.model.reference import reference_text

    model = transformers.Wav2Vec2ForCTC.from_pretrained(str(MODEL)).eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(str(MODEL))
    return lambda audio: " ".join(reference_text(model, processor, audio).split())


@pytest.mark.slow
def test_batched_evaluation_equals_one_clip_at_a_time(asr):
    """tools/eval_demo_model.py decodes held-out clips in padded batches; each clip's text must be what the
    model gives for that clip alone (the frames computed for another clip's padding are not decoded), or
    the reported CER is not the model's."""
    transformers = pytest.importorskip("transformers")
    from eval_demo_model import transcribe

    model = transformers.Wav2Vec2ForCTC.from_pretrained(str(MODEL)).eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(str(MODEL))
    clips = [_read(CLIPS / name) for name, _ in _references()]
    clips.append(np.zeros(4 * 16000, dtype=np.float32))  # longer than any clip: the others get padding
    batched = transcribe(model, processor, clips, batch_size=len(clips))
    assert batched == [asr(c) for c in clips]
