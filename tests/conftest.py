import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))

# Tests never read a developer's own ~/.config/streamer/config.toml (in-process and in subprocesses).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="streamer-test-config-")
# Live runs open a control socket (streamer ctl) named "default" under the runtime dir: each test run gets
# its own, so runs side by side (and the user's own streamer) never meet. Short: a socket path holds 107 bytes.
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="sr-", dir="/tmp")


def _reinit_portaudio() -> None:
    """PortAudio lists devices once, at initialisation: start it again to see a new sound server."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


@pytest.fixture(scope="session")
def virtual_mic(tmp_path_factory):
    """A private PulseAudio server whose null sink's monitor is the default source, visible to this process
    (PortAudio re-initialised) and to subprocesses (PULSE_RUNTIME_PATH in os.environ)."""
    from virtual_mic import PulseUnavailable, VirtualMic

    try:
        mic = VirtualMic(tmp_path_factory.mktemp("pulse"))
    except PulseUnavailable as exc:
        pytest.skip(f"no PulseAudio virtual microphone here: {exc}")
    keys = ("PULSE_RUNTIME_PATH", "PULSE_STATE_PATH", "PULSE_SERVER")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.pop("PULSE_SERVER", None)
    os.environ.update({k: mic.env[k] for k in keys[:2]})
    _reinit_portaudio()
    yield mic
    mic.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _reinit_portaudio()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random CTC model whose output varies with the audio (seed 1 emits several letters)."""
    from helpers import make_tiny_ctc_folder

    return make_tiny_ctc_folder(tmp_path_factory.mktemp("models") / "tiny-seed1", "base", seed=1)


def espeak(path, text: str, voice: str = "en-us") -> tuple[np.ndarray, int]:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    audio, rate = sf.read(str(path), dtype="float32")
    return audio, rate


@pytest.fixture(scope="session")
def utterances_wav(tmp_path_factory):
    """Three short espeak-ng sentences, each followed by 0.8 s of silence (three VAD segments); 22050 Hz mono."""
    folder = tmp_path_factory.mktemp("speech")
    parts = []
    for i, text in enumerate(["Open the door.", "The weather is nice.", "Turn off the lights."]):
        audio, rate = espeak(folder / f"u{i}.wav", text)
        parts += [audio, np.zeros(int(0.8 * rate), dtype=np.float32)]
    path = folder / "utterances.wav"
    sf.write(str(path), np.concatenate(parts), rate)
    return path
