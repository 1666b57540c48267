"""Optional beam-search decoding of finals with pyctcdecode and kenlm (`pip install 'streamer[beam]'`), with
a KenLM language model (the one a checkpoint ships in its `language_model/` folder, streamer.model.
language_model, or a file given with --lm) and hotwords (the voice-command phrases and --hotwords).

A checkpoint that ships a language model gets it on finals by default (`--decoder auto`); other checkpoints,
and `--decoder greedy`, decode greedily and need none of this. The recognizer always stitches greedily for
partials and word times; at the end of each utterance its committed frame logits [frames, vocab] go through
`BeamRescorer`, whose text becomes the final's text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from streamer.core.decoding import Vocabulary
from streamer.errors import ConfigError, require
from streamer.model.language_model import LanguageModelFiles, read_unigrams

#: Beam width. It runs on the worker at each utterance end, so it delays that final and the audio behind it:
#: a 5 s utterance (250 frames, 32 tokens, noisy peaked logits) took 0.30 s at 16, 0.58 s at 32 and 2.3 s at
#: pyctcdecode's own default of 100 on the 2-core dev machine (under load).
DEFAULT_BEAM_WIDTH = 32
#: pyctcdecode's default hotword bonus (log-score per hotword match).
DEFAULT_HOTWORD_WEIGHT = 10.0
#: Log-probability given to special tokens (<s>, </s>, <unk>) so the beam never spells them out.
_SPECIAL_LOGP = -1e4
_PLACEHOLDER_BASE = 0xE000  # private-use characters stand in for special tokens (pyctcdecode wants 1 char)


def labels_for(vocabulary: Vocabulary) -> tuple[list[str], list[int]]:
    """pyctcdecode labels in token-id order ('|' -> ' ', the blank '<pad>' -> ''), and the ids of special
    tokens, which get private-use stand-ins and are masked out of the logits."""
    labels: list[str] = []
    special: list[int] = []
    for i, tok in enumerate(vocabulary.tokens):
        if i == vocabulary.blank_id:
            labels.append("")
        elif tok in (vocabulary.word_delimiter, " "):
            labels.append(" ")
        elif len(tok) == 1:
            labels.append(tok)
        else:  # <s>, </s>, <unk>, or an unused slot
            labels.append(chr(_PLACEHOLDER_BASE + i))
            special.append(i)
    return labels, special


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def check_available(lm_path: str | None = None, language_model: bool = False) -> None:
    """Fail at start (one line with the install hint) when beam search cannot run: pyctcdecode, and kenlm
    when a language model is used (an --lm file, or `language_model` shipped with the checkpoint)."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # it warns about kenlm on import
    require("pyctcdecode", "beam")
    if lm_path:
        if not Path(lm_path).is_file():
            raise ConfigError(f"language model file {lm_path} does not exist", "give a KenLM .arpa or .bin file to --lm")
    if lm_path or language_model:
        require("kenlm", "beam", package="kenlm")  # the beam extra builds it from source (a C++ compiler)


class BeamRescorer:
    """A FinalRescorer (streamer.core.recognizer): committed logits of one utterance -> text."""

    def __init__(self, vocabulary: Vocabulary, lm_path: str | None = None, hotwords: Iterable[str] = (),
                 beam_width: int = DEFAULT_BEAM_WIDTH, hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
                 language_model: LanguageModelFiles | None = None) -> None:
        """`lm_path`: a KenLM file with pyctcdecode's default weights; `language_model`: a checkpoint's
        layout with its own weights and unigrams (lm_path wins when both are given)."""
        check_available(lm_path, language_model is not None)
        from pyctcdecode import build_ctcdecoder

        if beam_width < 1:
            raise ConfigError(f"beam width must be at least 1, not {beam_width}")
        self.labels, self.special = labels_for(vocabulary)
        if lm_path or language_model is None:
            self.decoder = build_ctcdecoder(self.labels, kenlm_model_path=str(lm_path) if lm_path else None)
        else:
            lm = language_model
            self.decoder = build_ctcdecoder(self.labels, kenlm_model_path=str(lm.kenlm_path),
                                            unigrams=read_unigrams(lm.unigrams_path), alpha=lm.alpha, beta=lm.beta,
                                            unk_score_offset=lm.unk_score_offset, lm_score_boundary=lm.score_boundary)
        self.language_model = None if lm_path else language_model
        self.beam_width = beam_width
        self.hotword_weight = hotword_weight
        letters = [t for t in vocabulary.tokens if len(t) == 1 and t.isalpha()]
        upper = sum(t.isupper() for t in letters) > len(letters) / 2
        words = (" ".join(h.split()) for h in hotwords)
        self.hotwords = tuple(dict.fromkeys(h.upper() if upper else h.lower() for h in words if h))

    def __call__(self, logits: np.ndarray) -> str:
        if len(logits) == 0:
            return ""
        logp = _log_softmax(logits)
        if self.special:
            logp[:, self.special] = _SPECIAL_LOGP
        text = self.decoder.decode(logp, beam_width=self.beam_width, hotwords=list(self.hotwords) or None,
                                   hotword_weight=self.hotword_weight)
        return " ".join(text.split())
