"""`streamer serve`: Wyoming and vosk-compatible WebSocket servers over one loaded model, one Session per
connection (docs/server.md). A layer beside cli: it may import app, audio, model, core and sinks; only cli
imports it. The protocol packages (wyoming, websockets: `pip install streamer[server]`) are imported where
the endpoints start."""

from streamer.server.common import Limits
from streamer.server.run import ServeOptions, Server, serve

__all__ = ["Limits", "ServeOptions", "Server", "serve"]
