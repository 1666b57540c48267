"""Transcript writers chosen by extension: .txt (one final per line), .srt / .vtt (timed finals), .jsonl
(every event with its audio time and wall-clock emission time). Each writes as events arrive and flushes,
so a crash loses at most the utterance in progress.

A write that fails (disk full, file system gone) raises one SinkError naming the file, which removes the sink
from the session (the other outputs go on); the file is cut back to the end of the last complete line or cue,
so what was written stays valid, and `close()` never raises."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from streamer.core.events import Event, FinalEvent, LevelEvent
from streamer.errors import ConfigError, SinkError
from streamer.sinks.labels import SourceLabel, labelled, vtt_voice

OUTPUT_EXTENSIONS = (".txt", ".srt", ".vtt", ".jsonl")


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def event_to_dict(event: Event, source: SourceLabel | None = None) -> dict:
    """The jsonl record of an event; with several sources (mic and desktop), its `source` ("mic" / "desktop")."""
    d: dict[str, Any] = {"type": type(event).__name__.removesuffix("Event").lower()}
    if source is not None:
        d["source"] = source.source
    d.update(dataclasses.asdict(event))
    if isinstance(event, FinalEvent):
        d["words"] = [dataclasses.asdict(w) for w in event.words]
    return d


class _TextFileSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(path)
            # Unbuffered bytes: nothing is held back in a buffer, so a failed write leaves nothing to fail
            # again at close(), and the end of the last complete record is always known (`_good`).
            self._f: BinaryIO = open(path, "wb", buffering=0)
        except OSError as exc:
            raise SinkError(f"cannot write output file {path}: {exc.strerror}", "choose a writable path") from exc
        self.cues = 0
        self.failed: SinkError | None = None
        self._good = 0  # bytes of complete records on disk
        try:
            self.header()
        except SinkError:
            self.close()
            raise

    def header(self) -> None:
        pass

    def write(self, text: str, sync: bool = True) -> None:
        """Write one complete record (line, cue), then flush it to disk; all of it or, on error, none of it."""
        if self.failed is not None:
            return
        data = text.encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                n = self._f.write(view)
                if n is None or n <= 0:  # a raw write that wrote nothing would loop forever
                    raise OSError(errno.EIO, "the file accepted no data")
                view = view[n:]
            if sync:
                os.fsync(self._f.fileno())
        except OSError as exc:  # disk full, file system gone: one line; earlier finals are already on disk
            self.failed = SinkError(f"cannot write to {self.path}: {exc.strerror or exc}",
                                    "free disk space or choose another --output path")
            self._cut_back()
            raise self.failed from exc
        self._good += len(data)

    def _cut_back(self) -> None:
        """Drop a partly written record, so the file ends with a complete one (best effort)."""
        try:
            os.ftruncate(self._f.fileno(), self._good)
        except OSError:
            pass  # not a regular file (a device), or the file system is gone: nothing more to do

    def handle(self, event: Event) -> None:
        self.handle_from(event, None)

    def handle_from(self, event: Event, source: SourceLabel | None) -> None:
        """An event of one of several sources (streamer.sinks.labels.SourceTap): finals carry its label."""
        if isinstance(event, FinalEvent) and event.text:
            self.cues += 1
            if source is None:
                self.final(event)
            else:
                self.final(event, source)

    def final(self, event: FinalEvent, source: SourceLabel | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the file; never raises (a failure was reported by the write that met it)."""
        if self._f.closed:
            return
        try:
            self._f.close()
        except OSError:
            pass


class TxtSink(_TextFileSink):
    def final(self, event: FinalEvent, source: SourceLabel | None = None) -> None:
        self.write(labelled(event.text, source) + "\n")


class SrtSink(_TextFileSink):
    def final(self, event: FinalEvent, source: SourceLabel | None = None) -> None:
        self.write(f"{self.cues}\n{_timestamp(event.start_s, ',')} --> {_timestamp(event.end_s, ',')}\n"
                   f"{labelled(event.text, source)}\n\n")


class VttSink(_TextFileSink):
    def header(self) -> None:
        self.write("WEBVTT\n\n")

    def final(self, event: FinalEvent, source: SourceLabel | None = None) -> None:
        self.write(f"{_timestamp(event.start_s, '.')} --> {_timestamp(event.end_s, '.')}\n{vtt_voice(event.text, source)}\n\n")


class JsonlSink(_TextFileSink):
    """Every event except the input meter (which would only add bulk), one JSON object per line."""

    def handle_from(self, event: Event, source: SourceLabel | None) -> None:
        if isinstance(event, LevelEvent):
            return
        self.write(json.dumps(event_to_dict(event, source), ensure_ascii=False) + "\n",
                   sync=isinstance(event, FinalEvent))


SINKS = {".txt": TxtSink, ".srt": SrtSink, ".vtt": VttSink, ".jsonl": JsonlSink}


#: Permissions of a new transcript file: readable by the user only (transcripts are private). An existing
#: file keeps its own.
NEW_FILE_MODE = 0o600


def _create_private(path: Path) -> None:
    """Create `path` with NEW_FILE_MODE if it does not exist yet (the open that follows truncates and writes
    it); an existing file, or the target of a link, keeps its mode."""
    if path.exists():
        return
    # O_EXCL refuses to follow a link; a dangling link gets here only with --overwrite, which follows it
    flags = os.O_WRONLY | os.O_CREAT | (0 if path.is_symlink() else os.O_EXCL)
    os.close(os.open(path, flags, NEW_FILE_MODE))


def check_output_path(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before anything runs (before the model loads): an unknown type, a folder, a non-empty file that
    would be replaced (a previous transcript is not lost by rerunning a command unless --overwrite says so),
    a symbolic link to nowhere (writing would create a file wherever it points: a trap in shared folders;
    --overwrite follows it), and a path that cannot be written (an existing file is opened for appending,
    which changes nothing; for a new one, the nearest existing folder above it must be writable)."""
    p = Path(path)
    if p.suffix.lower() not in SINKS:
        raise ConfigError(f"unknown output type {p.suffix or '(none)'!r} for {p}",
                          f"use one of {', '.join(OUTPUT_EXTENSIONS)}")
    if p.is_dir():
        raise ConfigError(f"output path {p} is a folder", "give a file name")
    if p.is_symlink() and not p.exists() and not overwrite:
        raise ConfigError(f"output path {p} is a symbolic link to {os.readlink(p)}, which does not exist",
                          "remove the link or choose another path, or pass --overwrite to write where it points")
    if not overwrite and p.is_file() and p.stat().st_size > 0:
        raise ConfigError(f"output file {p} already exists ({p.stat().st_size} bytes)",
                          "choose another path, or pass --overwrite to replace it")
    _check_writable(p)
    return p


def _check_writable(p: Path) -> None:
    if p.exists():
        try:
            if p.is_file():
                with open(p, "ab"):  # append: the file is not changed
                    pass
            elif not os.access(p, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        except OSError as exc:
            raise ConfigError(f"cannot write output file {p}: {exc.strerror or exc}",
                              "choose a writable path, or change the file's permissions") from exc
        return
    folder = p.absolute().parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write output file {p}: {folder} is not a folder", "choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(folder) else "permission denied"
        raise ConfigError(f"cannot write output file {p}: the folder {folder} is not writable ({why})",
                          "choose a writable path")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def open_output(path: str | Path, overwrite: bool = False):
    p = check_output_path(path, overwrite)
    return SINKS[p.suffix.lower()](p)
