"""streamer: real-time speech recognition with wav2vec2 CTC models, stitched exactly on the frame grid.

The core is push-based and free of I/O: feed 16 kHz mono float32 audio, get frozen events back.

    from streamer import AudioChunk, FinalEvent, Recognizer, load_model

    recognizer = Recognizer(load_model("demo"))          # or a hub id / local Hugging Face folder
    events = recognizer.feed(AudioChunk(0, audio, 16000)) + recognizer.finish()
    print([e.text for e in events if isinstance(e, FinalEvent)])

`Session` (streamer.app) runs the same core on a live source with threads, sinks and an ordered shutdown.
"""

__version__ = "0.1.0"

from streamer.app.session import Session, SessionOptions
from streamer.core.config import Config, ModelConfig, VadConfig, WindowConfig
from streamer.core.events import AudioChunk, Event, FinalEvent, LevelEvent, PartialEvent, StatsEvent, VadEvent, Word
from streamer.core.recognizer import Recognizer
from streamer.errors import StreamerError
from streamer.model import load_model

__all__ = [
    "AudioChunk", "Config", "Event", "FinalEvent", "LevelEvent", "ModelConfig", "PartialEvent", "Recognizer",
    "Session", "SessionOptions", "StatsEvent", "StreamerError", "VadConfig", "VadEvent", "WindowConfig", "Word",
    "load_model", "__version__",
]
