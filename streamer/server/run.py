"""`streamer serve`: one loaded model, a Wyoming and / or a vosk-compatible WebSocket endpoint, many streams.

    server = Server(model, config, limits, wyoming=("127.0.0.1", 10300), websocket=("127.0.0.1", 2700))
    await server.start()        # binds; server.ports has the bound ports (port 0: any free one)
    ...
    await server.stop()         # refuses new clients, closes the connections, stops every session

`serve(options)` loads the model and runs the server until SIGTERM / SIGINT (exit 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from streamer.app.options import DecoderOptions
from streamer.core.config import Config
from streamer.core.recognizer import FinalRescorer
from streamer.model.inference import CTCModel
from streamer.server.batching import BatchOptions, BatchScheduler
from streamer.server.common import Admission, Limits, SharedRescorer, Stream, parse_endpoint

log = logging.getLogger("streamer.server")


@dataclass(frozen=True)
class ServeOptions:
    config: Config
    wyoming: str | None = None  # tcp://HOST:PORT
    websocket: str | None = None  # ws://HOST:PORT
    limits: Limits = field(default_factory=Limits)
    language: str = "en"
    #: Cross-stream batching (streamer.server.batching); None: one window at a time under the model's lock.
    batch: BatchOptions | None = field(default_factory=BatchOptions)
    #: How finals are decoded, as `streamer --decoder`: auto uses the checkpoint's own language model.
    decoder: DecoderOptions = field(default_factory=DecoderOptions)


def served_rescorer(decoder: DecoderOptions, model: CTCModel) -> FinalRescorer | None:
    """The finals rescorer every stream of a server shares: LM beam search exactly as `streamer` uses it
    (the checkpoint's language model under --decoder auto), serialised across streams; None: greedy."""
    from streamer.app.run import final_rescorer

    rescorer = final_rescorer(decoder, model, None)
    return SharedRescorer(rescorer) if rescorer is not None else None


class Server:
    def __init__(self, model: CTCModel, config: Config, limits: Limits | None = None, *,
                 wyoming: tuple[str, int] | None = None, websocket: tuple[str, int] | None = None,
                 language: str = "en", batch: BatchOptions | None = None,
                 final_rescorer: FinalRescorer | None = None) -> None:
        self.model = model
        #: Finals of every stream go through it (None: greedy, as the windows decode).
        self.final_rescorer = final_rescorer
        self.config = config.validate()
        self.limits = (limits or Limits()).validate()
        self.admission = Admission(self.limits)
        self.language = language
        self.wyoming_at = wyoming
        self.websocket_at = websocket
        self.ports: dict[str, int] = {}
        # Stopping a session joins its threads: done here, never on the event loop.
        self.executor = ThreadPoolExecutor(max_workers=self.limits.max_sessions + 2, thread_name_prefix="session-stop")
        self._wyoming: Any = None
        self._websocket: Any = None
        self._vosk_tasks: set[asyncio.Task[Any]] = set()
        #: Runs the windows of all streams in batches; None: each stream's windows in turn under the lock.
        self.scheduler = BatchScheduler(model, batch) if batch is not None else None

    def open_stream(self, rate: int, width: int, channels: int) -> Stream:
        """A new stream over its own view of the shared model (its own feature-reuse state)."""
        view = self.scheduler.view() if self.scheduler is not None else self.model.view()
        return Stream(view, self.config, self.executor, rate, width, channels,
                      max_finals=self.limits.max_pending_finals, final_rescorer=self.final_rescorer)

    async def start(self) -> None:
        if self.wyoming_at is not None:
            from wyoming.server import AsyncTcpServer

            from streamer.server.wyoming import StreamerEventHandler

            host, port = self.wyoming_at
            self._wyoming = AsyncTcpServer(host, port)
            await self._wyoming.start(partial(StreamerEventHandler, server=self))
            self.ports["wyoming"] = self._wyoming._server.sockets[0].getsockname()[1]
        if self.websocket_at is not None:
            from websockets.asyncio.server import serve

            host, port = self.websocket_at
            self._websocket = await serve(self._vosk, host, port, max_size=self.limits.max_message_bytes,
                                          ping_interval=20, ping_timeout=20, close_timeout=5)
            self.ports["websocket"] = self._websocket.sockets[0].getsockname()[1]

    async def _vosk(self, connection: Any) -> None:
        from streamer.server.vosk import VoskConnection, WebsocketsTransport

        task = asyncio.current_task()
        if task is not None:
            self._vosk_tasks.add(task)
        try:
            await VoskConnection(self, WebsocketsTransport(connection)).run()
        finally:
            if task is not None:
                self._vosk_tasks.discard(task)

    async def stop(self) -> None:
        if self._wyoming is not None:
            server = self._wyoming._server
            handlers = list(self._wyoming._handlers)
            await self._wyoming.stop()  # stops every handler: their streams are aborted in their finally
            if handlers:
                await asyncio.wait(handlers, timeout=30)
            if server is not None:
                await server.wait_closed()
        if self._websocket is not None:
            self._websocket.close()  # closes every connection (1001): their streams are aborted
            await self._websocket.wait_closed()
        self.executor.shutdown(wait=True)
        st = self.model.call_stats
        if self.scheduler is not None:
            self.scheduler.close()
            log.info("batching: %s", self.scheduler.stats.summary())
        log.info("model calls: %d windows in %d calls (mean batch %.2f), busy %.1f s",
                 st.windows, st.calls, st.mean_batch, st.busy_s)

    def batching(self) -> str:
        """For the start-up line."""
        if self.scheduler is None:
            return "one window at a time"
        o = self.scheduler.options
        return f"batches of up to {o.max_batch} windows, wait {o.wait_ms:g} ms"

    def endpoints(self) -> list[str]:
        out = []
        if self.wyoming_at is not None:
            out.append(f"wyoming on tcp://{self.wyoming_at[0]}:{self.ports['wyoming']}")
        if self.websocket_at is not None:
            out.append(f"websocket on ws://{self.websocket_at[0]}:{self.ports['websocket']}")
        return out


def serve(options: ServeOptions) -> int:
    """Load the model, serve until SIGTERM or SIGINT, then stop every session; 0 on a clean stop."""
    from streamer.model.loading import load_model

    wyoming = parse_endpoint(options.wyoming, "tcp", "--wyoming") if options.wyoming else None
    websocket = parse_endpoint(options.websocket, "ws", "--websocket") if options.websocket else None
    limits = options.limits.validate()
    model = load_model(options.config.model)
    server = Server(model, options.config, limits, wyoming=wyoming, websocket=websocket, language=options.language,
                    batch=options.batch, final_rescorer=served_rescorer(options.decoder, model))

    async def main() -> None:
        try:
            await server.start()
        except OSError as exc:
            from streamer.errors import ConfigError

            raise ConfigError(f"cannot listen: {exc.strerror or exc}", "pick another port, or stop what uses it") from exc
        print(f"streamer: serving {model.description}: {', '.join(server.endpoints())} "
              f"(max {limits.max_sessions} sessions{', token required' if limits.token else ''}; {server.batching()}; "
              f"finals: {'beam search' if server.final_rescorer is not None else 'greedy'})",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("streamer: stopping the server", file=sys.stderr, flush=True)
        await server.stop()

    asyncio.run(main())
    return 0
