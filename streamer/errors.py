"""One error hierarchy. Every error carries a one-line message that names the problem and what to do."""

from __future__ import annotations


class StreamerError(Exception):
    """Base of every error streamer reports to the user as one line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(StreamerError):
    """A bad option value or configuration file."""


class AudioFileError(StreamerError):
    """An audio file that is missing, unreadable or empty."""


class AudioDeviceError(StreamerError):
    """A PortAudio problem: no device, busy device, unsupported settings, device lost."""


class ModelLoadError(StreamerError):
    """A model that cannot be found, fetched or used."""


class NoCTCHeadError(ModelLoadError):
    """A checkpoint without a CTC head (pretrained-only wav2vec2)."""


class MissingDependencyError(StreamerError):
    """An optional dependency that is not installed."""


class OutOfMemory(StreamerError):
    """The model ran out of memory (RAM or GPU) on this input."""


class SinkError(StreamerError):
    """An output (file, clipboard, typing, command) that cannot be used."""


def require(module: str, extra: str | None = None, package: str | None = None):
    """Import an optional dependency lazily, failing with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module
        hint = f"pip install 'streamer[{extra}]'" if extra else f"pip install {pkg}"
        raise MissingDependencyError(f"the optional dependency {pkg!r} is not installed", f"install it: {hint}") from exc
