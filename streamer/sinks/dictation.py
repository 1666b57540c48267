"""Dictation text shaping: final texts in, the dictated document and the edits that bring a typed copy of
it up to date out. Pure: no I/O, no clock.

    dictation = Dictation()
    update = dictation.feed("HELLO WORLD PERIOD")     # document 'Hello world.'
    update = dictation.feed("SCRATCH THAT")           # document '' and edits (Delete(12),)

Shaping (each part can be switched off with ShapingConfig): words are lowercased (a text in capitals only,
as CTC models write; a cased text such as a Whisper final keeps its casing and punctuation) and sentences
capitalised (also the pronoun "I"); spoken punctuation ("period", "comma", "question mark", ...) and layout ("new line",
"new paragraph") become characters; "scratch that" removes the utterance in progress, or, said on its own,
the last utterance still in the document (said again, the one before).

The document is a list of utterances; each keeps the separator it was added with, so removing one restores
the document exactly and a typed copy needs only backspaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Spoken punctuation and layout words -> the characters they stand for (matched as whole words,
#: longest phrase first).
SPOKEN_PUNCTUATION: tuple[tuple[str, str], ...] = (
    ("period", "."), ("full stop", "."), ("comma", ","), ("question mark", "?"),
    ("exclamation mark", "!"), ("exclamation point", "!"), ("colon", ":"), ("semicolon", ";"),
    ("new line", "\n"), ("new paragraph", "\n\n"),
)

#: Editing commands that remove the last utterance.
SCRATCH_PHRASES: tuple[str, ...] = ("scratch that",)

#: Marks written once when said right after the same mark (a Whisper final writes 'Hello. Period.').
PUNCTUATION_MARKS = ".,?!:;"

#: Characters after which the next word starts a sentence.
SENTENCE_END = ".?!"

#: Lowercase words always written with a capital "I" (when capitalisation is on).
PRONOUN_I = {"i": "I", "i'm": "I'm", "i'll": "I'll", "i've": "I've", "i'd": "I'd"}


@dataclass(frozen=True)
class ShapingConfig:
    """What dictation shaping does. `enabled=False` passes the model's text through unchanged."""

    enabled: bool = True
    #: Lowercase, then capitalise sentence starts and the pronoun "I".
    capitalize: bool = True
    #: Turn punctuation and layout words into characters.
    spoken_punctuation: bool = True
    #: Honour "scratch that".
    editing: bool = True
    punctuation: tuple[tuple[str, str], ...] = SPOKEN_PUNCTUATION
    scratch_phrases: tuple[str, ...] = SCRATCH_PHRASES


@dataclass(frozen=True)
class Delete:
    """Remove this many characters before the cursor (backspaces)."""

    chars: int


@dataclass(frozen=True)
class Insert:
    """Type this text at the cursor."""

    text: str


Edit = Delete | Insert


@dataclass(frozen=True)
class DictationUpdate:
    """The result of one final."""

    #: The whole dictated document after this final.
    document: str
    #: What this final added to the document (with its leading separator); "" if nothing.
    added: str
    #: The latest utterance still in the document, without its leading space ("replace" clipboard mode).
    latest: str
    #: How a typed copy of the previous document becomes this one: at most one Delete, then one Insert.
    edits: tuple[Edit, ...]
    #: Utterances removed by "scratch that".
    scratched: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.edits)


@dataclass(frozen=True)
class _Word:
    text: str


@dataclass(frozen=True)
class _Mark:
    """Punctuation or layout characters."""

    chars: str


@dataclass(frozen=True)
class _Scratch:
    pass


_Item = _Word | _Mark | _Scratch


def edits_between(old: str, new: str) -> tuple[Edit, ...]:
    """The backspaces and typing that turn `old` into `new` (keeping their common prefix)."""
    n = 0
    limit = min(len(old), len(new))
    while n < limit and old[n] == new[n]:
        n += 1
    edits: list[Edit] = []
    if len(old) > n:
        edits.append(Delete(len(old) - n))
    if len(new) > n:
        edits.append(Insert(new[n:]))
    return tuple(edits)


@dataclass
class Dictation:
    """The dictation state machine. Feed it final texts in order; each call returns a DictationUpdate."""

    config: ShapingConfig = field(default_factory=ShapingConfig)
    _pieces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        phrases: list[tuple[tuple[str, ...], _Item]] = []
        if self.config.enabled and self.config.spoken_punctuation:
            phrases += [(tuple(p.lower().split()), _Mark(c)) for p, c in self.config.punctuation]
        if self.config.enabled and self.config.editing:
            phrases += [(tuple(p.lower().split()), _Scratch()) for p in self.config.scratch_phrases]
        # longest first, so "new paragraph" wins over a shorter phrase starting the same way
        self._phrases = sorted((p for p in phrases if p[0]), key=lambda p: -len(p[0]))

    @property
    def document(self) -> str:
        return "".join(self._pieces)

    def feed(self, text: str) -> DictationUpdate:
        """Add one final (model text, e.g. 'HELLO WORLD PERIOD')."""
        before = self.document
        scratched = 0
        current: list[_Item] = []
        for item in self._parse(text):
            if isinstance(item, _Scratch):
                if current:
                    current = []  # the utterance in progress
                elif self._pieces:
                    self._pieces.pop()
                    scratched += 1
            else:
                current.append(item)
        added = self._render(current)
        if added:
            self._pieces.append(added)
        return self._update(before, added, scratched)

    def insert(self, text: str) -> DictationUpdate:
        """Add literal text (a voice command's insert action) as an utterance of its own, unshaped, so
        "scratch that" can remove it like any other."""
        before = self.document
        if text:
            self._pieces.append(text)
        return self._update(before, text, 0)

    # -- internals -----------------------------------------------------------------------------------------
    def _update(self, before: str, added: str, scratched: int) -> DictationUpdate:
        after = self.document
        latest = self._pieces[-1].lstrip(" ") if self._pieces else ""
        return DictationUpdate(document=after, added=added, latest=latest, edits=edits_between(before, after),
                               scratched=scratched)

    def _parse(self, text: str) -> list[_Item]:
        words = text.split()
        if not self.config.enabled:
            return [_Word(w) for w in words]
        # A CTC model writes capitals only ('HELLO WORLD'): lowercased. A cased text (Whisper finals,
        # --final-model) keeps its casing and punctuation; phrases match without either ('Period.').
        cased = any(c.islower() for c in text)
        shown = words if cased else [w.lower() for w in words]
        keys = [normalize_phrase(w) for w in words]
        items: list[_Item] = []
        i = 0
        while i < len(words):
            for phrase, item in self._phrases:
                if tuple(keys[i : i + len(phrase)]) == phrase:
                    items.append(item)
                    i += len(phrase)
                    break
            else:
                items.append(_Word(shown[i]))
                i += 1
        return items

    def _render(self, items: list[_Item]) -> str:
        doc = self.document
        if not self.config.enabled:
            text = " ".join(i.text for i in items if isinstance(i, _Word))
            return (" " if doc and text else "") + text
        out: list[str] = []
        tail = doc  # what the next item follows
        for item in items:
            if isinstance(item, _Word):
                word = item.text
                if self.config.capitalize:
                    word = PRONOUN_I.get(word, word)
                    if _starts_sentence(tail):
                        word = word[:1].upper() + word[1:]
                piece = ("" if not tail or tail.endswith("\n") else " ") + word
            else:
                assert isinstance(item, _Mark)
                if item.chars in PUNCTUATION_MARKS and tail.endswith(item.chars):
                    continue  # 'world. Period.': a cased model wrote the mark the speaker said
                piece = item.chars
            out.append(piece)
            tail += piece
        return "".join(out)


def _starts_sentence(tail: str) -> bool:
    stripped = tail.rstrip(" ")
    return not stripped or stripped.endswith("\n") or stripped[-1] in SENTENCE_END


_NON_WORD = re.compile(r"[^\w']+")


def normalize_phrase(text: str) -> str:
    """Lowercase words without punctuation, single-spaced: what voice commands and hotwords compare."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())
