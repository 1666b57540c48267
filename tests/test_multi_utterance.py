"""Streaming a recording of several sentences with pauses (as people dictate) with the bundled demo model
loses nothing against offline decoding: each final is the offline decode of its utterance (the final pass,
run early during the hangover), and the streamed text of the whole recording is as accurate against the
truth as the offline decode of the whole recording. Expectations come from offline decodes made here, not
from stored strings, so the test holds for any demo model (it is retrained from time to time)."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.slow

SR = 16000


@pytest.fixture(scope="module")
def demo():
    pytest.importorskip("transformers")
    from streamer.core.config import ModelConfig
    from streamer.model import load_model

    return load_model(ModelConfig(name="demo", device="cpu", quantize=False))


@pytest.fixture(scope="module")
def recordings():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng renders the recordings (scripts/setup.sh installs it)")
    from streamer.bench.multi_utterance import synthetic_recordings

    return synthetic_recordings(count=1)  # one of 4 sentences in training voices, one in the held-out voice


def test_each_final_is_the_offline_decode_of_its_utterance(demo, recordings):
    from streamer.bench.multi_utterance import error_rates, stream_recognizer
    from streamer.core.config import Config
    from streamer.model.reference import reference_text

    cfg = Config()
    silence = cfg.window.final_pass_silence_ms * SR // 1000
    for rec in recordings:
        finals, recognizer = stream_recognizer(demo, rec.audio, cfg)
        assert len(finals) >= 2 and all(f.full_pass for f in finals), rec.name  # pauses of 0.3-2 s: several utterances
        assert recognizer.early_passes_used == len(finals)  # every pass ran during its hangover
        offline = []
        for f in finals:
            start = -(-round(f.start_s * SR) // 320) * 320  # the pass starts on the windows' frame grid
            end = round(f.end_s * SR) + silence
            offline.append(" ".join(reference_text(demo.model, demo.processor, rec.audio[start:end]).split()))
        streamed = [f.text for f in finals]
        assert error_rates(offline, streamed)["cer"] <= 0.01, (rec.name, offline, streamed)


def test_streamed_recording_is_as_accurate_as_its_offline_decode(demo, recordings):
    """Against the truth, the streamed finals of each recording are no worse than the offline decode of the
    whole recording (+ 2 points CER, the margin for a model that decodes the whole recording better than its
    parts), and they keep its text: nothing lost at utterance starts, ends or pauses (a lost sentence of
    four is more than 20% CER)."""
    from streamer.bench.multi_utterance import error_rates, offline_text, stream_finals
    from streamer.core.config import Config

    for rec in recordings:
        finals, _ = stream_finals(demo, rec.audio, Config())
        streamed = " ".join(f.text for f in finals)
        offline = offline_text(demo, rec.audio)
        truth_streamed = error_rates([rec.truth], [streamed])["cer"]
        truth_offline = error_rates([rec.truth], [offline])["cer"]
        assert truth_streamed <= truth_offline + 0.02, (rec.name, rec.truth, offline, streamed)
        assert error_rates([offline], [streamed])["cer"] <= 0.2, (rec.name, offline, streamed)
