"""The Wyoming ASR server (Home Assistant's voice pipeline): one AsyncEventHandler per connection, owning at
most one Stream at a time.

    describe                                  -> info (this program, the model, language "en")
    transcribe, audio-start, audio-chunk..., audio-stop
                                              -> transcript-start (at audio-start), transcript-chunk (stable
                                                 text as it is committed), transcript (the whole text, the
                                                 authoritative one), transcript-stop

Any PCM format Wyoming allows (rate, width 1-4 bytes, channels) is converted to 16 kHz mono by the stream's
PushSource. Limits: events are read with a cap on the header line, data and payload sizes; a client idle for
the idle timeout is closed; with a token, the first event must carry it in its data ("token"). A malformed
event gets one `error` event and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.server import AsyncEventHandler

from streamer import __version__
from streamer.server.common import Stream, StreamError

log = logging.getLogger("streamer.server.wyoming")

ATTRIBUTION = Attribution(name="streamer", url="https://github.com/")
#: The longest JSON header line an event may have (its data may follow it, counted against max size).
MAX_HEADER_BYTES = 64 * 1024


class ProtocolError(Exception):
    """A malformed event: told to the client in one error event, then the connection is closed."""


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """One event, or None at end of stream; ProtocolError when it is malformed or larger than max_bytes
    (checked before its data or payload are read)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise ProtocolError("the connection ended inside an event header") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"event header longer than {MAX_HEADER_BYTES} bytes") from None
    try:
        header = json.loads(line)
    except ValueError:
        raise ProtocolError("event header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("event header has no type")
    data = header.get("data") or {}
    data_length = header.get("data_length") or 0
    payload_length = header.get("payload_length") or 0
    if not isinstance(data, dict) or not isinstance(data_length, int) or not isinstance(payload_length, int) \
            or data_length < 0 or payload_length < 0:
        raise ProtocolError("event header has bad data or lengths")
    if data_length + payload_length > max_bytes:
        raise ProtocolError(f"event of {data_length + payload_length} bytes is larger than the limit of {max_bytes}")
    if data_length:
        try:
            extra = json.loads(await reader.readexactly(data_length))
        except asyncio.IncompleteReadError:
            raise ProtocolError("the connection ended inside an event's data") from None
        except ValueError:
            raise ProtocolError("event data is not JSON") from None
        if not isinstance(extra, dict):
            raise ProtocolError("event data is not an object")
        data.update(extra)
    payload = None
    if payload_length:
        try:
            payload = await reader.readexactly(payload_length)
        except asyncio.IncompleteReadError:
            raise ProtocolError("the connection ended inside an event's payload") from None
    return Event(type=header["type"], data=data, payload=payload)


def asr_info(model_name: str, description: str, language: str) -> Info:
    model = AsrModel(name=model_name, attribution=ATTRIBUTION, installed=True, description=description,
                     version=None, languages=[language])
    program = AsrProgram(name="streamer", attribution=ATTRIBUTION, installed=True,
                         description="streamer: streaming wav2vec2 CTC speech recognition", version=__version__,
                         models=[model], supports_transcript_streaming=True)
    return Info(asr=[program])


class TranscriptChunks:
    """transcript-chunk texts: appended pieces whose concatenation is the transcript so far. Only stable text
    is sent: each final, and the whole words already committed in the utterance in progress. A final that
    does not extend what was sent (the one-pass final revised committed text) ends the chunks of this
    stream; the `transcript` event always has the whole text."""

    def __init__(self) -> None:
        self.finals: list[str] = []
        self.sent = ""
        self.diverged = False

    def _next(self, target: str) -> str | None:
        if self.diverged or not target.startswith(self.sent):
            self.diverged = self.diverged or not target.startswith(self.sent)
            return None
        piece = target[len(self.sent):]
        if not piece:
            return None
        self.sent = target
        return piece

    def _prefix(self) -> str:
        return " ".join(self.finals)

    def committed(self, committed_text: str) -> str | None:
        words = committed_text.strip()
        cut = words.rfind(" ")
        if cut <= 0:
            return None
        stable = words[:cut]
        prefix = self._prefix()
        return self._next(f"{prefix} {stable}" if prefix else stable)

    def final(self, text: str) -> str | None:
        if text:
            self.finals.append(text)
        return self._next(self._prefix())

    @property
    def text(self) -> str:
        return self._prefix()


class StreamerEventHandler(AsyncEventHandler):
    """One Wyoming connection (a thin handler: the Stream does the work)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Any) -> None:
        super().__init__(reader, writer)
        self.server = server  # streamer.server.run.Server
        self.limits = server.limits
        self.stream: Stream | None = None
        self.chunks = TranscriptChunks()
        self.authorized = server.admission.limits.token is None
        self.peer = writer.get_extra_info("peername")

    # -- the connection --------------------------------------------------------------------------------------
    async def write_event(self, event: Event) -> None:
        await asyncio.wait_for(async_write_event(event, self.writer), self.limits.idle_timeout_s)

    async def _refuse(self, text: str, code: str) -> None:
        log.info("wyoming %s: %s", self.peer, code)
        try:
            await self.write_event(Error(text=text, code=code).event())
        except (OSError, asyncio.TimeoutError):
            pass

    async def run(self) -> None:
        admission = self.server.admission
        if not admission.enter():
            await self._refuse(admission.busy_reason(), "busy")
            self.writer.close()
            return
        log.info("wyoming %s: connected", self.peer)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(read_event(self.reader, self.limits.max_message_bytes),
                                                   self.limits.idle_timeout_s)
                except asyncio.TimeoutError:
                    await self._refuse(f"no event for {self.limits.idle_timeout_s:g} s: closing", "idle-timeout")
                    break
                except ProtocolError as exc:
                    await self._refuse(f"malformed event: {exc}", "malformed")
                    break
                if event is None:
                    break
                if not self.authorized:
                    if not admission.token_ok(event.data.get("token")):
                        await self._refuse("a valid token is needed (in the data of the first event)", "unauthorized")
                        break
                    self.authorized = True
                try:
                    if not await self.handle_event(event):
                        break
                except ProtocolError as exc:
                    await self._refuse(f"malformed event: {exc}", "malformed")
                    break
                except StreamError as exc:
                    await self._refuse(str(exc), "stream-failed")
                    break
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            log.info("wyoming %s: connection lost", self.peer)
        finally:
            try:
                await self.disconnect()
            finally:
                admission.leave()
                self.writer.close()
                log.info("wyoming %s: closed", self.peer)

    async def disconnect(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.abort()
            log.info("wyoming %s: stream aborted (%s)", self.peer, stream.summary())

    # -- events ----------------------------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            model = self.server.model
            await self.write_event(asr_info(model.name, model.description, self.server.language).event())
        elif Transcribe.is_type(event.type):
            pass  # the one model and language; the request's name and language are not needed
        elif AudioStart.is_type(event.type):
            start = _parse(AudioStart.from_event, event)
            await self._start(start.rate, start.width, start.channels)
        elif AudioChunk.is_type(event.type):
            chunk = _parse(AudioChunk.from_event, event)
            if self.stream is None:
                await self._start(chunk.rate, chunk.width, chunk.channels)
            assert self.stream is not None
            if (chunk.rate, chunk.width, chunk.channels) != self.stream.format:
                _check(self.stream.set_format, chunk.rate, chunk.width, chunk.channels)
            await self.stream.push(chunk.audio, self.limits.idle_timeout_s)
            await self._send_partial_chunks()
        elif AudioStop.is_type(event.type):
            await self._stop()
        else:
            log.debug("wyoming %s: ignored a %s event", self.peer, event.type)
        return True

    async def _start(self, rate: int, width: int, channels: int) -> None:
        if self.stream is not None:  # a new audio-start without an audio-stop: the old stream is dropped
            await self.disconnect()
        self.stream = _check(self.server.open_stream, rate, width, channels)
        self.chunks = TranscriptChunks()
        await self.write_event(TranscriptStart(language=self.server.language).event())

    async def _send_partial_chunks(self) -> None:
        assert self.stream is not None
        bridge = self.stream.bridge
        while (final := bridge.take_final()) is not None:
            await self._chunk(self.chunks.final(final.text))
        partial = bridge.partial()
        if partial is not None:
            await self._chunk(self.chunks.committed(partial.committed_text))

    async def _chunk(self, piece: str | None) -> None:
        if piece:
            await self.write_event(TranscriptChunk(text=piece).event())

    async def _stop(self) -> None:
        if self.stream is None:
            await self.write_event(Transcript(text="", language=self.server.language).event())
            return
        stream, self.stream = self.stream, None
        for final in await stream.finish():
            await self._chunk(self.chunks.final(final.text))
        log.info("wyoming %s: transcribed %s", self.peer, stream.summary())
        await self.write_event(Transcript(text=self.chunks.text, language=self.server.language).event())
        await self.write_event(TranscriptStop().event())


def _parse(parse: Any, event: Event) -> Any:
    try:
        return parse(event)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bad {event.type} event ({type(exc).__name__}: {exc})") from None


def _check(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"unsupported audio format: {exc}") from None
