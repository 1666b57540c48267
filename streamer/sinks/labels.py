"""Several sources into one set of outputs (`streamer --mic --desktop`): each source's label on its lines and
cues, its `source` in the jsonl records, and one lock so two workers never write at once.

    you: open the door                 .txt, .srt cue text, plain output lines
    <v you>open the door               .vtt (a WebVTT voice span: players show or style the speaker)
    {"type": "final", "source": "mic", ...}    .jsonl (every event)

A single source writes exactly what it always did: no label, no `source` field.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from streamer.core.events import Event
from streamer.errors import ConfigError

#: Longest label accepted (it starts every line of the text outputs).
MAX_LABEL_CHARS = 24
#: Characters a label may not hold: they would break a WebVTT voice span or a line-per-final file.
FORBIDDEN_LABEL_CHARS = "<>&:\n\r\t"


@dataclass(frozen=True)
class SourceLabel:
    #: What the jsonl `source` field says: "mic" or "desktop".
    source: str
    #: What people read in the text outputs and on the caption screen ("you", "desktop" by default).
    label: str


def check_label(label: str, flag: str) -> str:
    """A label from the command line or the settings file: short, printable, one line (one clear error else)."""
    text = label.strip()
    if not text:
        raise ConfigError(f"{flag} is empty", f"give a short name, e.g. {flag} you")
    bad = sorted({c for c in text if c in FORBIDDEN_LABEL_CHARS or not c.isprintable()})
    if bad:
        raise ConfigError(f"{flag} {label!r} holds {', '.join(repr(c) for c in bad)}",
                          "use letters, digits, spaces and simple punctuation")
    if len(text) > MAX_LABEL_CHARS:
        raise ConfigError(f"{flag} {label!r} is longer than {MAX_LABEL_CHARS} characters", "give a shorter name")
    return text


def labelled(text: str, source: SourceLabel | None) -> str:
    """A final as a line of text: 'you: open the door' (unchanged without a source)."""
    return text if source is None else f"{source.label}: {text}"


def vtt_voice(text: str, source: SourceLabel | None) -> str:
    """A final as WebVTT cue text: '<v you>open the door' (unchanged without a source). Labels hold no '<',
    '>' or '&' (check_label), so they need no escaping; the text is the model's letters."""
    return text if source is None else f"<v {source.label}>{text}"


class SourceTap:
    """One source's handle on a sink shared by several sessions: passes each event on under the shared lock,
    with the source's label to sinks that take one (`handle_from`), as is to the others (the desktop sink).
    `close()` does nothing: the sink is closed once, by the run, after every session has stopped."""

    def __init__(self, sink: object, source: SourceLabel, lock: threading.Lock) -> None:
        self.sink = sink
        self.source = source
        self.lock = lock

    def handle(self, event: Event) -> None:
        with self.lock:
            handle_from = getattr(self.sink, "handle_from", None)
            if handle_from is not None:
                handle_from(event, self.source)
            else:
                self.sink.handle(event)  # type: ignore[attr-defined]

    def close(self) -> None:
        pass
