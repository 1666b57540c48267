"""The vosk-server WebSocket protocol (alphacep/vosk-server websocket/asr_server.py), so vosk clients work
unchanged:

    client: {"config": {"sample_rate": 16000}}     (optional; vosk-server's default rate is 8000 Hz)
    client: binary 16-bit little-endian mono PCM   -> one reply each: {"partial": "..."}, or, when an
                                                     utterance has ended, {"result": [...], "text": "..."}
    client: {"eof": 1}                             -> the last final (all finals not yet sent, merged), then
                                                     the server closes the connection (code 1000)

Results carry word times from the CTC frames: {"word", "start", "end", "conf"} (conf is 1.0: greedy CTC has
no calibrated confidence); config {"words": false} leaves them out. Other config keys (phrase_list,
max_alternatives) are accepted and ignored. A streamer extension, opt-in so vosk clients see nothing new:
config {"streamer_timing": true} adds "streamer": {"segment_id", "committed_until_s", "tentative_until_s"} (stream seconds
the partial commits / shows) to partials and "streamer": {"end_s"} to finals (the streams benchmark measures
partial latency with them).

Limits: a message over --max-message-bytes closes the connection (1009, by websockets); with --token the
request must carry it (?token=... or an "Authorization: Bearer ..." header) or it is closed with 1008;
over --max-sessions: 1013 with the reason; no message for the idle timeout: 1008 "idle timeout". A malformed
message gets one {"error": "..."} reply and the connection is closed (1007).

The protocol is written once, over a `Transport` (recv / send / close / token): `WebsocketsTransport` for the
`websockets` server of `streamer serve --websocket`, and a Starlette WebSocket for the Ray Serve replicas
(streamer.server.ray_serve).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streamer.core.events import FinalEvent
from streamer.server.common import Stream, StreamError

log = logging.getLogger("streamer.server.vosk")

#: vosk-server's sample rate when the client sends no config (VOSK_SAMPLE_RATE).
DEFAULT_SAMPLE_RATE = 8000


class Malformed(Exception):
    pass


class Closed(Exception):
    """The client is gone (or its connection failed): nothing more can be sent to it."""


class Transport(Protocol):
    """One client's WebSocket, as the protocol needs it. `recv`, `send` and `close` raise `Closed` once the
    connection is gone; a message over the size limit closes the connection (1009) and raises `Closed`."""

    peer: object

    def token(self) -> str | None: ...

    async def recv(self) -> str | bytes: ...

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


def result_message(finals: list[FinalEvent], words: bool) -> dict[str, Any]:
    """One vosk final result from one or more finals (merged in order)."""
    text = " ".join(f.text for f in finals if f.text)
    if not words:
        return {"text": text}
    result = [{"conf": 1.0, "end": round(w.end_s, 3), "start": round(w.start_s, 3), "word": w.text}
              for f in finals for w in f.words]
    return {"result": result, "text": text}


def token_from(query: str, headers: Any) -> str | None:
    """The token a client presents: ?token=... in the URI's query, else "Authorization: Bearer ...", else an
    X-Streamer-Token header (`headers`: any case-insensitive mapping)."""
    parsed = parse_qs(query)
    if "token" in parsed:
        return parsed["token"][0]
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return str(auth[7:].strip())
    token = headers.get("X-Streamer-Token")
    return str(token) if token is not None else None


def token_of(connection: ServerConnection) -> str | None:
    request = connection.request
    if request is None:
        return None
    return token_from(urlparse(request.path).query, request.headers)


def parse_text(message: str) -> dict[str, Any]:
    try:
        obj = json.loads(message)
    except ValueError:
        raise Malformed("text message is not JSON") from None
    if not isinstance(obj, dict) or not ("config" in obj or "eof" in obj):
        raise Malformed('a text message must be {"config": {...}} or {"eof": 1}')
    return obj


def parse_rate(config: dict[str, Any]) -> int | None:
    if "sample_rate" not in config:
        return None
    value = config["sample_rate"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Malformed(f"sample_rate must be a number, not {value!r}")
    return int(round(value))


class WebsocketsTransport:
    """A `websockets` server connection (it enforces the size limit itself: max_size)."""

    def __init__(self, connection: ServerConnection) -> None:
        self.ws = connection
        self.peer: object = connection.remote_address

    def token(self) -> str | None:
        return token_of(self.ws)

    async def recv(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed as exc:
            raise Closed() from exc

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise Closed() from exc

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


class VoskConnection:
    def __init__(self, server: Any, connection: Transport) -> None:
        self.server = server  # streamer.server.run.Server
        self.limits = server.limits
        self.ws = connection
        self.rate = DEFAULT_SAMPLE_RATE
        self.words = True
        self.timing = False
        self.stream: Stream | None = None
        self.peer = connection.peer

    async def send(self, obj: dict[str, Any]) -> None:
        await asyncio.wait_for(self.ws.send(json.dumps(obj, ensure_ascii=False)), self.limits.idle_timeout_s)

    async def close(self, code: int, reason: str) -> None:
        log.info("websocket %s: closing (%d %s)", self.peer, code, reason)
        await self.ws.close(code, reason[:120])

    async def run(self) -> None:
        admission = self.server.admission
        if not admission.enter():
            await self.close(1013, admission.busy_reason())
            return
        log.info("websocket %s: connected", self.peer)
        try:
            if not admission.token_ok(self.ws.token()):
                await self.close(1008, "unauthorized: a valid token is needed (?token=... or Authorization: Bearer)")
                return
            await self._serve()
        except Closed:
            log.info("websocket %s: connection lost", self.peer)
        except (OSError, asyncio.TimeoutError):
            log.info("websocket %s: connection failed or stalled", self.peer)
        finally:
            try:
                if self.stream is not None:
                    stream, self.stream = self.stream, None
                    await stream.abort()
                    log.info("websocket %s: stream aborted (%s)", self.peer, stream.summary())
            finally:
                admission.leave()

    async def _serve(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.ws.recv(), self.limits.idle_timeout_s)
            except asyncio.TimeoutError:
                await self.close(1008, f"idle timeout: no message for {self.limits.idle_timeout_s:g} s")
                return
            try:
                if isinstance(message, str):
                    obj = parse_text(message)
                    if "config" in obj:
                        self._config(obj["config"])
                        continue
                    if obj.get("eof"):
                        await self._eof()
                        await self.close(1000, "eof")
                        return
                    continue  # {"eof": 0}
                await self._audio(message)
            except Malformed as exc:
                await self.send({"error": str(exc)})
                await self.close(1007, f"malformed: {exc}")
                return
            except StreamError as exc:
                await self.send({"error": str(exc)})
                await self.close(1011, str(exc))
                return

    def _config(self, config: Any) -> None:
        if not isinstance(config, dict):
            raise Malformed('"config" must be an object')
        rate = parse_rate(config)
        if rate is not None:
            if self.stream is not None and rate != self.stream.format[0]:
                raise Malformed("sample_rate cannot change once audio has been sent")
            self.rate = rate
        if "words" in config:
            self.words = bool(config["words"])
        if "streamer_timing" in config:
            self.timing = bool(config["streamer_timing"])

    async def _audio(self, data: bytes) -> None:
        if self.stream is None:
            try:
                self.stream = self.server.open_stream(self.rate, 2, 1)
            except ValueError as exc:
                raise Malformed(f"unsupported audio format: {exc}") from None
        await self.stream.push(data, self.limits.idle_timeout_s)
        final = self.stream.bridge.take_final()
        if final is not None:
            message = result_message([final], self.words)
            if self.timing:
                message["streamer"] = {"end_s": round(final.end_s, 3)}
            await self.send(message)
            return
        partial = self.stream.bridge.partial()
        reply: dict[str, Any] = {"partial": partial.text if partial is not None else ""}
        if self.timing and partial is not None:
            reply["streamer"] = {"segment_id": partial.segment_id, "committed_until_s": round(partial.committed_until_s, 3),
                                 "tentative_until_s": round(partial.tentative_until_s, 3)}
        await self.send(reply)

    async def _eof(self) -> None:
        finals: list[FinalEvent] = []
        if self.stream is not None:
            stream, self.stream = self.stream, None
            finals = await stream.finish()
            log.info("websocket %s: transcribed %s", self.peer, stream.summary())
        await self.send(result_message(finals, self.words))
