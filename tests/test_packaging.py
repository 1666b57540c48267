"""The installed package (a wheel, not the source tree) resolves --model demo and ships the bundled audio."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_demo_model_and_resolves_it_outside_the_source_tree(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("streamer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "streamer/assets/demo_model/config.json" in names
    assert any(n.startswith("streamer/assets/audio/") and n.endswith(".wav") for n in names)
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import streamer.model as m; p = m.demo_model_path(); "
            "assert str(p).startswith(%r), p; print(p)" % str(target))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(target)), timeout=120)
    assert r.returncode == 0, r.stderr
