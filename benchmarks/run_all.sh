#!/usr/bin/env bash
# Regenerate every CPU number in BENCHMARKS.md (~20 min on the 2-core machine; run it when the machine is
# otherwise idle: load average < 0.5). Writes benchmarks/results/cpu.json, part-cpu-*.json, cpu.png and the
# generated part of BENCHMARKS.md. Extra arguments go to `streamer bench --full` (e.g. --parts sweep).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
echo "run_all: load average $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m streamer bench --full "$@"
