"""CTC stitching across windows on the global frame grid.

Committed frames are collapsed with the last committed label carried across steps (a repeat continues the
same token, a blank resets), so the committed tokens always equal the CTC collapse of the concatenated
committed frames: a letter spanning a seam is neither doubled nor dropped. Look-ahead frames are collapsed
from a copy of that state into the tentative tail, which the next step replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class TokenSpan:
    """One collapsed CTC token and the global frames [start_frame, end_frame] it was emitted on."""

    token_id: int
    start_frame: int
    end_frame: int


@dataclass(frozen=True)
class Collapsed:
    #: Tokens that start in these frames.
    spans: tuple[TokenSpan, ...]
    #: Last frame that continued the token before these frames (None if none did).
    continued_until: int | None
    #: Label of the last frame, None after a blank.
    last_label: int | None


def collapse(labels: np.ndarray | list[int], start_frame: int, blank_id: int,
             last_label: int | None = None) -> Collapsed:
    """CTC-collapse frame labels starting at global frame `start_frame`, continuing from `last_label`, the
    label of the frame just before (None when there was none or it was blank)."""
    spans: list[TokenSpan] = []
    continued: int | None = None
    for i, label in enumerate(np.asarray(labels).tolist()):
        frame = start_frame + i
        if label == blank_id:
            last_label = None
        elif label == last_label:
            if spans:
                spans[-1] = TokenSpan(label, spans[-1].start_frame, frame)
            else:
                continued = frame
        else:
            spans.append(TokenSpan(label, frame, frame))
            last_label = label
    return Collapsed(tuple(spans), continued, last_label)


class CTCStitcher:
    """Holds the committed tokens of the current utterance and the label state at the commit point."""

    def __init__(self, blank_id: int) -> None:
        self.blank_id = blank_id
        self.reset()

    def reset(self) -> None:
        self.tokens: list[TokenSpan] = []
        self._last_label: int | None = None
        self.next_frame: int | None = None

    def commit(self, labels: np.ndarray, start_frame: int) -> None:
        if self.next_frame is not None and start_frame != self.next_frame:
            raise ValueError(f"commit must continue at frame {self.next_frame}, got {start_frame}")
        result = collapse(labels, start_frame, self.blank_id, self._last_label)
        if result.continued_until is not None and self.tokens:
            self.tokens[-1] = replace(self.tokens[-1], end_frame=result.continued_until)
        self.tokens.extend(result.spans)
        self._last_label = result.last_label
        self.next_frame = start_frame + len(labels)

    def tentative(self, labels: np.ndarray, start_frame: int) -> tuple[TokenSpan, ...]:
        """Tokens the look-ahead frames would add after the committed ones (state unchanged). A tentative
        continuation of the last committed token adds nothing."""
        return collapse(labels, start_frame, self.blank_id, self._last_label).spans

    def take_head(self, count: int) -> list[TokenSpan]:
        """Remove and return the first `count` tokens; the rest and the label state stay committed."""
        head, self.tokens = self.tokens[:count], self.tokens[count:]
        return head
