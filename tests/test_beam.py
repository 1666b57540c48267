"""Optional beam search of finals (pyctcdecode): labels from the model vocabulary, hotwords, the recognizer's
rescorer hook, and the CLI wiring. Greedy decoding needs none of it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from streamer.core.config import Config, VadConfig, WindowConfig
from streamer.core.decoding import Vocabulary
from streamer.core.events import AudioChunk, FinalEvent
from streamer.core.recognizer import Recognizer
from streamer.core.vad import VadSegmenter
from streamer.errors import MissingDependencyError

from desktop_fixtures import run_streamer, speech_clip, tiny_model  # noqa: F401
from helpers import LETTERS, LocalModel, always_speech

VOCAB = Vocabulary(tuple(LETTERS), blank_id=0, word_delimiter="|")


def needs_pyctcdecode():
    return pytest.importorskip("pyctcdecode", reason="the beam extra is not installed (pip install 'streamer[beam]')")


def logits_for(spelling: str) -> np.ndarray:
    """Peaked logits that spell `spelling` frame by frame ('_' blank, ' ' delimiter)."""
    out = np.full((len(spelling), len(LETTERS)), -10.0, np.float32)
    for i, ch in enumerate(spelling):
        out[i, 0 if ch == "_" else LETTERS.index("|" if ch == " " else ch)] = 10.0
    return out


def test_labels_follow_the_vocabulary():
    from streamer.model.beam import labels_for

    labels, special = labels_for(VOCAB)
    assert labels[0] == "" and labels[LETTERS.index("|")] == " " and labels[LETTERS.index("E")] == "E"
    assert special == [1, 2, 3]  # <s>, </s>, <unk>: stand-ins, masked out
    assert len(set(labels)) == len(labels) and all(len(x) <= 1 for x in labels)


def test_peaked_logits_decode_like_greedy_and_hotwords_tip_an_ambiguous_frame():
    needs_pyctcdecode()
    from streamer.model.beam import BeamRescorer

    assert BeamRescorer(VOCAB)(logits_for("HH_EL_LLO_  _W_ORLDD")) == "HELLO WORLD"
    x = logits_for("C_A_TT")
    x[2] = -10.0
    x[2, LETTERS.index("A")], x[2, LETTERS.index("U")] = 1.0, 1.2  # greedy: CUT
    assert BeamRescorer(VOCAB)(x) == "CUT"
    assert BeamRescorer(VOCAB, hotwords=["cat"])(x) == "CAT"  # hotwords follow the vocabulary's case
    special = logits_for("OK")
    special[1, 1] = 20.0  # <s> would win greedily
    assert "<" not in BeamRescorer(VOCAB)(special)


class PeakedLocalModel(LocalModel):
    def logits(self, audio, start_sample=None):
        return super().logits(audio, start_sample) * 30.0


def test_recognizer_hands_each_utterance_to_the_rescorer_whole():
    """With peaked logits beam search agrees with greedy stitching, so finals must be equal: the rescorer saw
    exactly the committed frames of each utterance, forced splits included."""
    needs_pyctcdecode()
    from streamer.model.beam import BeamRescorer

    rng = np.random.default_rng(3)
    n = 16000 * 7
    audio = (rng.normal(0, 1, n) * np.repeat(rng.uniform(0, 0.5, n // 800 + 1), 800)[:n]).astype(np.float32)

    def finals(rescorer):
        cfg = Config(window=WindowConfig(240, 500, 160), vad=VadConfig(preroll_ms=0, max_segment_s=2.0))
        rec = Recognizer(PeakedLocalModel(), cfg, vad=VadSegmenter(cfg.vad, classifier=always_speech),
                         final_rescorer=rescorer)
        events = []
        for i in range(0, n, 1600):
            events += rec.feed(AudioChunk(i, audio[i : i + 1600], 16000))
        events += rec.finish()
        return [e.text for e in events if isinstance(e, FinalEvent)]

    greedy = finals(None)
    assert len(greedy) >= 3
    assert finals(BeamRescorer(LocalModel().vocabulary, beam_width=16)) == greedy


def test_missing_extra_is_one_line_with_the_install_hint(monkeypatch):
    from streamer.model.beam import check_available

    monkeypatch.setitem(sys.modules, "pyctcdecode", None)  # as if not installed
    with pytest.raises(MissingDependencyError) as err:
        check_available()
    assert err.value.one_line() == ("the optional dependency 'pyctcdecode' is not installed "
                                    "(install it: pip install 'streamer[beam]')")


@pytest.mark.slow
def test_cli_beam_decoder_with_hotwords(tmp_path, tiny_model, speech_clip, capsys, monkeypatch):
    needs_pyctcdecode()
    import streamer.app.run as run
    import streamer.cli as cli

    monkeypatch.setattr(run, "status", run.stderr_line)  # show the start-up lines although stderr is no terminal
    base = ["--file", str(speech_clip), "--no-tui", "--model", str(tiny_model)]
    assert cli.main(base) == 0
    greedy = capsys.readouterr()
    assert "beam search" not in greedy.err
    assert cli.main(base + ["--decoder", "beam", "--hotwords", "open", "--hotwords", "editor"]) == 0
    beam = capsys.readouterr()
    assert "streamer: beam search of finals (width 32, 2 hotwords)" in beam.err
    assert len(beam.out.splitlines()) == len(greedy.out.splitlines()) > 0
    assert cli.main(base + ["--hotwords", "open"]) == 0
    assert "greedy decoding ignores them" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_lm_needs_beam_and_an_existing_file(tmp_path, speech_clip):
    """--lm turns beam search on (--decoder auto); with --decoder greedy it is refused (tests/test_language_model.py)."""
    needs_pyctcdecode()
    out = run_streamer(["--file", str(speech_clip), "--no-tui", "--lm", "x.arpa"], tmp_path, timeout=60)
    assert out.returncode == 2 and out.stderr.strip() == (
        "streamer: error: language model file x.arpa does not exist (give a KenLM .arpa or .bin file to --lm)")
