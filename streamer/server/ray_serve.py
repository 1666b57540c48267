"""`streamer serve --ray`: the vosk-compatible WebSocket endpoint as a Ray Serve application (`pip install
'streamer[ray]'`; docs/server.md, "Ray Serve").

Each replica is a Ray actor holding its own loaded model and a `Server` without endpoints of its own (its
admission, its streams, its batching); Serve's proxy (uvicorn, on every node) takes the WebSocket and hands the
whole connection to one replica through the FastAPI ingress, so a stream's state (ring, VAD, stitcher,
feature-reuse) stays on that replica for the connection's life. The protocol is `VoskConnection`, the same
code as `streamer serve --websocket`, over a Starlette WebSocket (`StarletteTransport`).

A connection is one ongoing request to Serve, so `max_ongoing_requests` is `--max-sessions` per replica and
autoscaling follows sessions: `target_ongoing_requests` is `--target-sessions`, between `--min-replicas` and
`--max-replicas`. Wyoming (raw TCP) is not served here: Serve proxies HTTP, WebSockets and gRPC only.

Only this module imports ray, fastapi and starlette; only `streamer.cli.serve` imports it, and only for --ray.
"""

# No `from __future__ import annotations`: FastAPI reads the handler's parameter types at run time (a string
# "WebSocket" it cannot resolve through serve.ingress would make `websocket` a query parameter).
import logging
import math
import re
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, WebSocket
from ray import serve
from starlette.websockets import WebSocketDisconnect

from streamer.errors import ConfigError
from streamer.server.common import parse_endpoint
from streamer.server.run import ServeOptions, Server, served_rescorer
from streamer.server.vosk import Closed, VoskConnection, token_from

log = logging.getLogger("streamer.server.ray")

#: The Serve application's name (`serve status`, `serve.delete`).
APP_NAME = "streamer"
#: Response header of the WebSocket handshake naming the replica that holds the connection.
REPLICA_HEADER = "x-streamer-replica"


@dataclass(frozen=True)
class RayOptions:
    #: Ray cluster to join: "auto", "HOST:6379", "ray://HOST:10001"; None: ray.init()'s default (a cluster
    #: already running on this machine, else a new local one that ends with the command).
    address: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    #: Sessions per replica that autoscaling aims at; None: half of --max-sessions.
    target_sessions: float | None = None
    #: Ray resources each replica reserves. Ray hides the GPUs a replica did not reserve (CUDA_VISIBLE_DEVICES), so
    #: --device auto (the default) runs on the replica's GPU when num_gpus > 0 and on the CPU otherwise.
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    #: How long a replica being removed (scale-down, shutdown) waits for its connections to end, seconds.
    graceful_shutdown_s: float = 60.0

    def validate(self) -> "RayOptions":
        if self.min_replicas < 0:
            raise ConfigError(f"--min-replicas must not be negative, not {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ConfigError(f"--max-replicas ({self.max_replicas}) must be at least 1 and at least --min-replicas "
                              f"({self.min_replicas})")
        t = self.target_sessions
        if t is not None and not (math.isfinite(t) and t > 0):
            raise ConfigError(f"--target-sessions must be positive, not {t}")
        for flag, v in (("--replica-cpus", self.replica_cpus), ("--replica-gpus", self.replica_gpus)):
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{flag} must not be negative, not {v}")
        return self


def deployment_options(options: ServeOptions, ray: RayOptions) -> dict[str, Any]:
    """The replica deployment's Serve options (Deployment.options(**...))."""
    limits = options.limits
    target = ray.target_sessions if ray.target_sessions is not None else max(1.0, limits.max_sessions / 2)
    return {
        "name": "StreamerVosk",
        # One WebSocket = one ongoing request for its whole life: the router sends a replica at most
        # --max-sessions connections. Connections being routed count as queued, and when every replica is full
        # they wait (for a session to end or a replica to be added): up to the full capacity of the largest
        # deployment; more are refused at the handshake.
        "max_ongoing_requests": limits.max_sessions,
        "max_queued_requests": limits.max_sessions * ray.max_replicas,
        "autoscaling_config": {
            "min_replicas": ray.min_replicas,
            "initial_replicas": max(1, ray.min_replicas),
            "max_replicas": ray.max_replicas,
            "target_ongoing_requests": target,
        },
        "ray_actor_options": {"num_cpus": ray.replica_cpus, "num_gpus": ray.replica_gpus},
        "graceful_shutdown_timeout_s": ray.graceful_shutdown_s,
        # A model that cannot load fails the same way every time: say so instead of retrying for minutes.
        "max_constructor_retry_count": 1,
    }


class StarletteTransport:
    """A Starlette / FastAPI WebSocket as the vosk protocol's Transport. The size limit is checked here (the
    proxy's uvicorn takes messages up to 16 MiB): a larger message closes the connection with 1009."""

    def __init__(self, websocket: WebSocket, max_message_bytes: int) -> None:
        self.ws = websocket
        self.max_message_bytes = max_message_bytes
        client = websocket.client
        self.peer: object = (client.host, client.port) if client is not None else None

    def token(self) -> str | None:
        return token_from(self.ws.url.query, self.ws.headers)

    async def recv(self) -> str | bytes:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise Closed() from exc
        if message["type"] == "websocket.disconnect":
            raise Closed()
        data: str | bytes | None = message.get("bytes")
        if data is None:
            data = message.get("text")
        if data is None:
            raise Closed()
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        if size > self.max_message_bytes:
            await self.close(1009, f"message too big: {size} bytes, at most {self.max_message_bytes}")
            raise Closed()
        return data

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise Closed() from exc

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code, reason)
        except (RuntimeError, OSError):
            pass  # already closed


app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment
@serve.ingress(app)
class StreamerReplica:
    """One replica: a loaded model and a Server without endpoints; every WebSocket at "/" is one session."""

    def __init__(self, options: ServeOptions) -> None:
        from streamer.model.loading import load_model

        logger = logging.getLogger("streamer.server")
        logger.setLevel(logging.INFO)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        self.serve_options = options
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.model = load_model(options.config.model)
        self.server = Server(self.model, options.config, options.limits, language=options.language,
                             batch=options.batch, final_rescorer=served_rescorer(options.decoder, self.model))
        log.info("replica %s: %s loaded", self.replica, self.model.description)

    @app.websocket("/")
    async def vosk(self, websocket: WebSocket) -> None:
        await websocket.accept(headers=[(REPLICA_HEADER.encode(), self.replica.encode())])
        transport = StarletteTransport(websocket, self.serve_options.limits.max_message_bytes)
        await VoskConnection(self.server, transport).run()

    def describe(self) -> str:
        """The loaded model, for the start-up line (called through a DeploymentHandle)."""
        return str(self.model.description)

    async def __del__(self) -> None:
        # Serve removes a replica only when its connections have ended or graceful_shutdown_s has passed.
        server = getattr(self, "server", None)  # None: the constructor failed (a model that did not load)
        if server is not None:
            await server.stop()


def serve_ray(options: ServeOptions, ray_options: RayOptions) -> int:
    """Deploy the application on a Ray cluster, wait for SIGTERM / SIGINT / SIGHUP, then delete it (and Serve
    itself when no other application is left); 0 on a clean stop."""
    import ray

    if options.wyoming:
        raise ConfigError("--wyoming is not served through Ray Serve (it proxies HTTP and WebSockets, not raw TCP)",
                          "run `streamer serve --wyoming ...` without --ray beside it (docs/server.md)")
    if not options.websocket:
        raise ConfigError("streamer serve --ray needs --websocket ws://HOST:PORT (the address Serve's proxy listens on)")
    host, port = parse_endpoint(options.websocket, "ws", "--websocket")
    if port == 0:
        raise ConfigError("--websocket with --ray needs a fixed port (Serve's proxies listen on it on every node)",
                          "e.g. --websocket ws://0.0.0.0:2700")
    limits = options.limits.validate()
    ray_options = ray_options.validate()

    try:
        ray.init(address=ray_options.address, logging_level=logging.WARNING, configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot join the Ray cluster {ray_options.address or '(local)'}: {exc}",
                          "start one with `ray start --head`, or check --ray-address; a cluster with token "
                          "authentication also needs RAY_AUTH_MODE=token here") from exc
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    # After ray.init: its core worker installs a SIGTERM handler of its own (it would end us mid-deletion).
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        try:
            serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
            replica: Any = StreamerReplica  # a serve Deployment
            deployment = replica.options(**deployment_options(options, ray_options))
            try:
                handle = serve.run(deployment.bind(options), name=APP_NAME, route_prefix="/",
                                   logging_config={"log_level": "WARNING"})
                description = handle.describe.remote().result(timeout_s=60)
            except RuntimeError as exc:
                reason = _failure_reason() or str(exc).splitlines()[0]
                raise ConfigError(f"the Ray Serve replicas did not start: {reason}",
                                  "the replica's traceback is above; `serve status` has it too") from exc
            target = deployment_options(options, ray_options)["autoscaling_config"]["target_ongoing_requests"]
            print(f"streamer: serving {description} on Ray Serve: websocket on ws://{host}:{port}, "
                  f"{ray_options.min_replicas}-{ray_options.max_replicas} replicas (max {limits.max_sessions} "
                  f"sessions each, scaling at {target:g}{', token required' if limits.token else ''})",
                  file=sys.stderr, flush=True)
            while not stop.wait(0.5):
                pass
            print("streamer: stopping the server", file=sys.stderr, flush=True)
        finally:
            _undeploy()
            ray.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _failure_reason() -> str | None:
    """The streamer error a replica's constructor raised (a model that does not load, ...), from the failed
    application's status: Serve's own exception only says that the deployment failed."""
    try:
        app = serve.status().applications.get(APP_NAME)
    except Exception:
        return None
    if app is None:
        return None
    for text in [app.message, *(d.message for d in app.deployments.values())]:
        found = re.findall(r"streamer\.errors\.\w+: (.+)", text or "")
        if found:
            return str(found[-1]).strip()
    return None


def _undeploy() -> None:
    """Delete the application; shut Serve down too when it has no other application (its proxies hold the port)."""
    try:
        serve.delete(APP_NAME)
        if not serve.status().applications:
            serve.shutdown()
    except Exception as exc:  # the cluster may be gone already; nothing of ours is left to stop then
        log.warning("could not remove the Ray Serve application: %s", type(exc).__name__)
