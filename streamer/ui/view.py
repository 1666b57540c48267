"""Pure rendering: a state snapshot -> a Rich renderable that fills the given width and height.

    ┌ header: streamer · model (device, dtype) · mic: NAME @ 48000 Hz
    │ finished captions, the newest at the bottom, older ones scrolled off the top
    │ the current line: committed text, then the tentative tail dimmed
    │ notices from the desktop outputs (voice commands), for a few seconds
    ├ ───────
    │ VAD state and the input level meter
    │ RTF · latency · lag · dropped (· overflows · skipped partials · gaps, once there are any; threads)
    │ warnings (falling behind, catching up, audio dropped or missing), when there are any
    └ keys
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.text import Text

from streamer.core.config import MODEL_SAMPLE_RATE
from streamer.ui.state import Caption, Lane, Snapshot

#: The level meter spans this range of input level (dBFS): quieter reads empty, 0 dBFS reads full.
METER_FLOOR_DBFS = -60.0
METER_MAX_CELLS = 30
#: Caption lines kept on screen before the header, warnings and key help are compacted.
MIN_BODY_LINES = 3
SEP = " · "

STYLE_HEADER = "bold reverse"
STYLE_TENTATIVE = "dim italic"
STYLE_WARNING = "bold yellow"
STYLE_NOTICE = "cyan"
#: Each source's label colour when several run side by side (streamer --mic --desktop), in lane order.
LANE_STYLES = ("bold green", "bold blue", "bold magenta", "bold cyan")


def lane_style(s: Snapshot, label: str | None) -> str:
    labels = [lane.label for lane in s.lanes]
    return LANE_STYLES[labels.index(label) % len(LANE_STYLES)] if label in labels else "bold"


def caption_text(s: Snapshot, caption: Caption) -> Text:
    """A finished caption; with several sources, its label first ('you: open the door')."""
    if caption.label is None:
        return Text(caption.text)
    return Text.assemble((f"{caption.label}: ", lane_style(s, caption.label)), caption.text)


def lane_line(s: Snapshot, lane: Lane) -> Text | None:
    """A source's current line: 'desktop › committed tentative'."""
    if not (lane.committed or lane.tentative):
        return None
    line = Text.assemble((f"{lane.label} › ", lane_style(s, lane.label)), lane.committed)
    if lane.tentative:
        line.append(lane.tentative if lane.committed else lane.tentative.lstrip(), style=STYLE_TENTATIVE)
    return line


def lane_meter(s: Snapshot, lane: Lane, width: int) -> Text:
    """A source's VAD state and level, after its label (the labels padded to one width)."""
    pad = max(len(x.label) for x in s.lanes) + 1
    line = Text.assemble((f"{lane.label:<{pad}}", lane_style(s, lane.label)))
    own = replace(s, audio_seen=lane.audio_seen, speech=lane.speech, rms_dbfs=lane.rms_dbfs, peak_dbfs=lane.peak_dbfs)
    line.append_text(meter(own, max(1, width - pad)))
    return line


def lanes_footer(s: Snapshot) -> list[Text]:
    """RTF of the model over all sources, then each source's lag and dropped samples (gaps once there are any)."""
    style = STYLE_WARNING if s.warnings else ""
    parts = [Text.assemble((f"RTF {s.rtf:.2f}", style))]
    for lane in s.lanes:
        extra = f" gaps {lane.gaps}" if lane.gaps else ""
        parts.append(Text.assemble((f"{lane.label} ", lane_style(s, lane.label)),
                                   (f"lag {lane.lag_s:.2f} s dropped {lane.dropped_samples}{extra}", style)))
    return parts


def render(snapshot: Snapshot) -> CaptionScreen:
    return CaptionScreen(snapshot)


def _fmt_s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def vad_label(s: Snapshot) -> Text:
    if s.paused:
        return Text.assemble(("‖ paused", "bold magenta"))
    if not s.audio_seen:
        return Text.assemble(("… waiting for audio", "dim"))
    if s.speech:
        return Text.assemble(("● speech", "bold green"))
    return Text.assemble(("○ listening", "cyan"))


def meter(s: Snapshot, width: int) -> Text:
    """VAD state, then a bar of the input level; the bar shrinks (and finally goes) on narrow terminals."""
    line = vad_label(s)
    if not s.audio_seen or s.paused:
        return line
    level = f" {max(s.rms_dbfs, -99.0):3.0f} dB"
    cells = min(METER_MAX_CELLS, width - len(line) - len(level) - 2)
    if cells >= 4:
        fill = max(0.0, min(1.0, (s.rms_dbfs - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS))
        peak = max(0.0, min(1.0, (s.peak_dbfs - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS))
        n, p = round(fill * cells), min(cells - 1, round(peak * cells))
        line.append("  ")
        line.append("█" * n, style="green" if fill < 0.85 else "red")
        line.append("".join("│" if i == p and peak > fill else "░" for i in range(n, cells)), style="dim")
    if len(line) + len(level) <= width:
        line.append(level)
    return line


def pack(parts: list[Text], width: int) -> list[Text]:
    """Join parts with ' · ', breaking lines between parts (a part longer than the width is folded)."""
    lines: list[Text] = []
    for part in parts:
        if lines and len(lines[-1]) + len(SEP) + len(part) <= width:
            lines[-1].append(SEP, style="dim")
            lines[-1].append_text(part)
        else:
            lines.append(Text.assemble(part))
    return lines


def footer(s: Snapshot) -> list[Text]:
    style = STYLE_WARNING if s.warnings else ""
    parts = [f"RTF {s.rtf:.2f}", f"latency {_fmt_s(s.latency_s)}", f"lag {s.lag_s:.2f} s",
             f"dropped {s.dropped_samples}"]
    if s.input_overflows:
        parts.append(f"overflows {s.input_overflows}")
    if s.skipped_partials:
        parts.append(f"skipped {s.skipped_partials}")
    if s.threads:
        parts.append(f"threads {s.threads}")
    if s.gaps:
        parts.append(f"gaps {s.gaps} ({s.gap_samples / MODEL_SAMPLE_RATE:.1f} s)")
    return [Text.assemble((p, style)) for p in parts]


def header(s: Snapshot) -> list[Text]:
    return [Text.assemble((" streamer ", STYLE_HEADER)), Text.assemble((s.model, "bold")), Text(s.audio)]


def keys(s: Snapshot) -> list[Text]:
    return [Text.assemble((k, "dim")) for k in ("q quit", "p resume" if s.paused else "p pause", "c clear")]


def current_line(s: Snapshot) -> Text | None:
    if not (s.committed or s.tentative):
        return None
    line = Text.assemble(("› ", "bold"), s.committed)
    if s.tentative:
        line.append(s.tentative if s.committed else s.tentative.lstrip(), style=STYLE_TENTATIVE)
    return line


class CaptionScreen:
    """Lays the snapshot out for exactly the console's width and height (bottom-anchored captions)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.snapshot
        width = max(1, options.max_width)
        height = options.height or options.max_height or console.height

        def wrap(text: Text) -> list[Text]:
            return list(text.wrap(console, width, overflow="fold"))

        def packed(parts: list[Text]) -> list[Text]:
            return [line for text in pack(parts, width) for line in wrap(text)]

        def one_line(parts: list[Text]) -> list[Text]:
            line = Text.assemble((SEP, "dim")).join(parts)
            line.truncate(width, overflow="ellipsis")
            return [line]

        warnings = [Text.assemble(("⚠ " + w, STYLE_WARNING)) for w in s.warnings]
        notices = [Text.assemble(("» " + n, STYLE_NOTICE)) for n in s.notices]
        rule = [Text("─" * width, style="dim")]
        top = packed(header(s))
        meters = [x for lane in s.lanes for x in wrap(lane_meter(s, lane, width))] if s.lanes else wrap(meter(s, width))
        foot = lanes_footer(s) if s.lanes else footer(s)
        bottom = [x for n in notices for x in wrap(n)] + rule + meters + packed(foot)
        bottom += [x for w in warnings for x in wrap(w)] + packed(keys(s))
        if height - len(top) - len(bottom) < MIN_BODY_LINES:  # small terminal: one line each, no key help
            top = one_line(header(s))
            bottom = one_line(notices[-1:]) if notices else []
            bottom += rule + (meters if s.lanes else meters[:1]) + one_line(foot) + (one_line(warnings) if warnings else [])
        body_height = max(0, height - len(top) - len(bottom))
        body: list[Text] = []
        if s.lanes:  # each source's current line, in lane order, below the finished captions
            current = [line for line in (lane_line(s, lane) for lane in s.lanes) if line is not None]
        else:
            one = current_line(s)
            current = [one] if one is not None else []
        # Newest first until the body is full: older captions scroll off the top.
        for text in list(reversed(current)) + [caption_text(s, c) for c in reversed(s.captions)]:
            if len(body) >= body_height:
                break
            body = wrap(text) + body
        body = body[-body_height:] if body_height else []
        lines = top + [Text("")] * (body_height - len(body)) + body + bottom
        for line in lines[:height]:
            yield from line.render(console)
            yield Segment.line()
