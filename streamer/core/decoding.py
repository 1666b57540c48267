"""Turning CTC tokens into text and timed words (greedy decoding; beam search is an optional extra)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamer.core.events import Word
from streamer.core.stitching import TokenSpan, collapse


class Tokenizer(Protocol):
    """What a vocabulary is read from: a Hugging Face CTC tokenizer (also read: word_delimiter_token, if any)."""

    @property
    def pad_token_id(self) -> int | None: ...

    def get_vocab(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Vocabulary:
    """Token strings by id, the CTC blank, and the word delimiter (`|` in wav2vec2 vocabularies)."""

    tokens: tuple[str, ...]
    blank_id: int
    word_delimiter: str = "|"

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> Vocabulary:
        vocab = tokenizer.get_vocab()
        tokens = [""] * (max(vocab.values()) + 1)
        for tok, idx in vocab.items():
            tokens[idx] = tok
        delimiter = getattr(tokenizer, "word_delimiter_token", None) or " "
        blank = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(tuple(tokens), int(blank), delimiter)

    def __len__(self) -> int:
        return len(self.tokens)


class GreedyDecoder:
    def __init__(self, vocabulary: Vocabulary, frame_s: float) -> None:
        self.vocabulary = vocabulary
        self.frame_s = frame_s

    def _is_delimiter(self, span: TokenSpan) -> bool:
        tok = self.vocabulary.tokens[span.token_id]
        return tok == self.vocabulary.word_delimiter or tok == " "

    def text(self, spans: Sequence[TokenSpan]) -> str:
        toks = self.vocabulary.tokens
        parts = [" " if self._is_delimiter(s) else toks[s.token_id] for s in spans]
        return " ".join("".join(parts).split())

    def words(self, spans: Sequence[TokenSpan]) -> tuple[Word, ...]:
        """Words with times from their first and last token frames (frame g is at g * frame_s)."""
        words: list[Word] = []
        current: list[TokenSpan] = []
        for span in list(spans) + [None]:
            if span is None or self._is_delimiter(span):
                if current:
                    text = "".join(self.vocabulary.tokens[s.token_id] for s in current)
                    words.append(Word(text, round(current[0].start_frame * self.frame_s, 3),
                                      round((current[-1].end_frame + 1) * self.frame_s, 3)))
                current = []
            else:
                current.append(span)
        return tuple(words)

    def complete_word_count(self, spans: Sequence[TokenSpan]) -> int:
        """How many leading tokens form complete words (up to and including the last delimiter)."""
        for i in range(len(spans) - 1, -1, -1):
            if self._is_delimiter(spans[i]):
                return i + 1
        return 0

    def decode_logits(self, logits: np.ndarray, start_frame: int = 0) -> str:
        """Greedy decode of a whole logit matrix [frames, vocab] (the offline reference path)."""
        labels = np.asarray(logits).argmax(axis=-1)
        return self.text(collapse(labels, start_frame, self.vocabulary.blank_id).spans)
