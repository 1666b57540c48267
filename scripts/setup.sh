#!/usr/bin/env bash
# Idempotent setup on a Debian/Ubuntu machine: system packages, a virtual environment, streamer and its
# test dependencies. Safe to run again; skips what is already there: the editable install is redone only
# when pyproject.toml changed (a stamp of its hash in .venv) or streamer does not import from this tree.
# pip is quiet: its output goes to .venv/setup-pip.log and is shown only when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(espeak-ng sox libsndfile1 libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins
              tmux xvfb xclip xdotool g++ python3-tk)
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
LOG=.venv/setup-pip.log
STAMP=.venv/.streamer-install-stamp
EXTRAS="vad,test,dictation,bench,desktop,whisper"
pip_quiet() {  # pip ARGS...: output to the log; shown (with the command) only if pip fails
  if ! .venv/bin/pip "$@" >>"$LOG" 2>&1; then
    echo "setup: pip $* failed; its output ($LOG):" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}
: >"$LOG"
installed=0
# torch first, pinned: the CPU wheel (an unpinned torch would pull gigabytes of CUDA packages).
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)" 2>/dev/null; then
  echo "setup: installing torch (once)"
  pip_quiet install -q "torch==${TORCH_VERSION:-2.13.0}"
  installed=1
fi
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS $(pwd)"
here=$(.venv/bin/python -c "import streamer, os; print(os.path.dirname(os.path.dirname(os.path.abspath(streamer.__file__))))" 2>/dev/null || true)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] || [ "$here" != "$(pwd)" ]; then
  echo "setup: installing streamer and its dependencies into .venv"
  pip_quiet install -q -e ".[$EXTRAS]"
  echo "$want" >"$STAMP"
  installed=1
fi
# Optional beam search (pyctcdecode) without its numpy<2 pin: it works with numpy 2 (tests/test_beam.py).
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('pyctcdecode') is None)" 2>/dev/null; then
  pip_quiet install -q --no-deps "pyctcdecode==0.5.0" "pygtrie>=2.1,<3"
  installed=1
fi
# kenlm for the demo model's language-model finals (on by default): no wheel on PyPI, so pip builds it from
# the sdist with g++ (about 2 min on 2 cores).
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('kenlm') is None)" 2>/dev/null; then
  echo "setup: building kenlm (once, about 2 min)"
  pip_quiet install -q "kenlm==0.3.0"
  installed=1
fi
if [ "$installed" = 1 ]; then
  .venv/bin/python -c "import streamer, torch, transformers, webrtcvad, soxr, sounddevice" || { echo "setup: import check failed"; exit 1; }
fi
