"""streamer: real-time speech recognition with wav2vec2 CTC models, stitched exactly on the frame grid.

The core is push-based and free of I/O: feed 16 kHz mono float32 audio, get frozen events back.

    from streamer import AudioChunk, FinalEvent, Recognizer, load_model

    recognizer = Recognizer(load_model("demo"))          # or a hub id / local Hugging Face folder
    events = recognizer.feed(AudioChunk(0, audio, 16000)) + recognizer.finish()
    print([e.text for e in events if isinstance(e, FinalEvent)])

`Session` (streamer.app) runs the same core on a live source with threads, sinks and an ordered shutdown.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers; at run time each name is imported when first used (__getattr__)
    from streamer.app.session import Session, SessionOptions
    from streamer.core.config import Config, ModelConfig, VadConfig, WindowConfig
    from streamer.core.events import AudioChunk, Event, FinalEvent, LevelEvent, PartialEvent, StatsEvent, VadEvent, Word
    from streamer.core.recognizer import Recognizer
    from streamer.errors import StreamerError
    from streamer.model import load_model

#: name -> the module that defines it. Importing the package imports none of them (numpy, the session ...),
#: so `streamer ctl` and `streamer --help` start fast.
_LAZY = {
    "Session": "streamer.app.session",
    "SessionOptions": "streamer.app.session",
    "Config": "streamer.core.config",
    "ModelConfig": "streamer.core.config",
    "VadConfig": "streamer.core.config",
    "WindowConfig": "streamer.core.config",
    "AudioChunk": "streamer.core.events",
    "Event": "streamer.core.events",
    "FinalEvent": "streamer.core.events",
    "LevelEvent": "streamer.core.events",
    "PartialEvent": "streamer.core.events",
    "StatsEvent": "streamer.core.events",
    "VadEvent": "streamer.core.events",
    "Word": "streamer.core.events",
    "Recognizer": "streamer.core.recognizer",
    "StreamerError": "streamer.errors",
    "load_model": "streamer.model",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "AudioChunk", "Config", "Event", "FinalEvent", "LevelEvent", "ModelConfig", "PartialEvent", "Recognizer",
    "Session", "SessionOptions", "StatsEvent", "StreamerError", "VadConfig", "VadEvent", "WindowConfig", "Word",
    "load_model", "__version__",
]
