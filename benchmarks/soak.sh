#!/usr/bin/env bash
# The reliability soaks in BENCHMARKS.md ("Reliability soak"), at low priority: the 1-hour accelerated soak
# (~10 min) and the 15-minute live soak through a PulseAudio virtual microphone (15 min of wall time; needs
# pulseaudio, pulseaudio-utils and ALSA's pulse plugin). Writes benchmarks/results/soak-*.json and prints
# each report. Usage: benchmarks/soak.sh [FAST_MINUTES [LIVE_MINUTES]] (0 skips one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FAST=${1:-60}
LIVE=${2:-15}
echo "soak: load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$FAST" != 0 ]; then nice -n 10 "$PY" -m streamer bench --soak "$FAST"; fi
if [ "$LIVE" != 0 ]; then nice -n 10 "$PY" -m streamer bench --soak "$LIVE" --soak-live; fi
