"""Fixtures for the dictation / clipboard / typing / command tests: synthetic speech (espeak-ng), a tiny
random model, the demo model (skipped until it lands), a real X server (Xvfb) and streamer as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def espeak_clip(path: Path, phrases: list[str], gap_s: float = 1.2, lead_s: float = 0.5) -> Path:
    """One WAV with each phrase spoken by espeak-ng, separated by silence (so the VAD splits them)."""
    import soundfile as sf

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    parts: list[np.ndarray] = []
    rate = None
    for i, phrase in enumerate(phrases):
        part = path.with_name(f"{path.stem}.{i}.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(part), phrase], check=True)
        x, rate = sf.read(part, dtype="float32")
        parts += [np.zeros(int((lead_s if i == 0 else gap_s) * rate), np.float32), x]
    parts.append(np.zeros(int(gap_s * rate), np.float32))
    sf.write(path, np.concatenate(parts), rate)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from helpers import make_tiny_ctc_folder

    return make_tiny_ctc_folder(tmp_path_factory.mktemp("tiny") / "model", "base")


@pytest.fixture(scope="session")
def speech_clip(tmp_path_factory) -> Path:
    """Three utterances; the tiny model turns each into some (meaningless) final."""
    return espeak_clip(tmp_path_factory.mktemp("speech") / "three.wav",
                       ["hello world period", "how are you question mark", "open the editor"])


def demo_model_or_skip() -> Path:
    from streamer.errors import ModelLoadError
    from streamer.model import demo_model_path

    try:
        return demo_model_path()
    except ModelLoadError:
        pytest.skip("the demo model (assets/demo_model) has not landed yet; these tests need a model that "
                    "recognises words")


def streamer_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(tmp / "xdg-config")  # never read the developer's own settings file
    env.pop("WAYLAND_DISPLAY", None)
    env.update(extra)
    return env


def run_streamer(args: list[str], tmp: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer", *args], cwd=tmp, env=streamer_env(tmp, **env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def xvfb():
    """A real X server on a free display (Xvfb picks it and tells us through -displayfd). Yields the
    DISPLAY value; DISPLAY is set in this process while the test runs."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (scripts/setup.sh installs xvfb)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "800x600x24"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as r:
            number = r.readline().strip()
        if not number:
            pytest.fail("Xvfb did not start")
        display = f":{number}"
        old = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = display
        try:
            yield display
        finally:
            if old is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = old
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_clipboard(display: str) -> str:
    return subprocess.run(["xclip", "-o", "-selection", "clipboard"], env={**os.environ, "DISPLAY": display},
                          capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL).stdout


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
