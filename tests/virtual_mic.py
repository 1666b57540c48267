"""The tests' virtual microphone: streamer.bench.pulse's private PulseAudio server (a null sink `vmic` whose
monitor is the default source), under the names the tests use."""

from streamer.bench.pulse import PulseMic as VirtualMic
from streamer.bench.pulse import PulseUnavailable

__all__ = ["PulseUnavailable", "VirtualMic"]
