#!/usr/bin/env bash
# Idempotent setup on a Debian/Ubuntu machine: system packages, a virtual environment, streamer and its
# test dependencies. Safe to run again; skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(espeak-ng sox libsndfile1 libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins
              tmux xvfb xclip xdotool)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# torch first, pinned: the CPU wheel (an unpinned torch would pull gigabytes of CUDA packages).
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/pip install -q -e ".[vad,test,dictation,bench]" 2>&1 | grep -v "^WARNING: Location" || true
# Optional beam search (pyctcdecode) without its numpy<2 pin: it works with numpy 2 (tests/test_beam.py).
.venv/bin/python -c "import pyctcdecode" 2>/dev/null || .venv/bin/pip install -q --no-deps "pyctcdecode==0.5.0" "pygtrie>=2.1,<3" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import streamer, torch, transformers, webrtcvad, soxr, sounddevice" || { echo "setup: import check failed"; exit 1; }
