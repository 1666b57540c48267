#!/usr/bin/env bash
# Build the demo model's n-gram language model with the real KenLM tools (lmplz, build_binary) and write it
# into assets/demo_model/ in the Hugging Face layout (Wav2Vec2ProcessorWithLM): alphabet.json beside the
# weights, language_model/{attrs.json, unigrams.txt, lm.bin}. Text: the demo corpus's TRAINING sentences
# (tools/demo_corpus.py -> build/demo_corpus/train.tsv) less a dev slice that alpha/beta are tuned on; never
# the held-out or everyday evaluation sentences.
#
#   bash tools/build_demo_lm.sh            # tools, text, LM, tuning, layout (about 10 min on 2 cores)
#   TUNE=0 bash tools/build_demo_lm.sh     # keep the alpha/beta already in attrs.json (or the defaults)
#
# KenLM's command-line tools are in no Debian package and not in pip's kenlm module (which only queries
# models): they are built here from the kenlm sdist on PyPI (it holds the whole source tree) with cmake, into
# build/kenlm (not committed). Debian packages: cmake g++ libboost-program-options-dev libboost-system-dev
# libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
KENLM_VERSION=${KENLM_VERSION:-0.3.0}
ORDER=${ORDER:-4}
PRUNE=${PRUNE:-"0 0 1 1"}     # drop 3- and 4-grams seen once: a few MB instead of tens
OUT=${OUT:-assets/demo_model}
WORK=${WORK:-build/demo_lm}
KENLM=${KENLM_DIR:-build/kenlm}
mkdir -p "$WORK" "$KENLM"

if [ ! -x "$KENLM/bin/lmplz" ] || [ ! -x "$KENLM/bin/build_binary" ]; then
  echo "build_demo_lm: building lmplz and build_binary from the kenlm $KENLM_VERSION sdist"
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "kenlm==$KENLM_VERSION" -d "$KENLM"
  rm -rf "$KENLM/src" && mkdir -p "$KENLM/src"
  tar xzf "$KENLM/kenlm-$KENLM_VERSION.tar.gz" -C "$KENLM/src" --strip-components=1
  cmake -S "$KENLM/src" -B "$KENLM/cmake" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >"$KENLM/cmake.log" 2>&1 \
    || { tail -20 "$KENLM/cmake.log"; exit 1; }
  nice -n 19 make -C "$KENLM/cmake" -j"$(nproc)" lmplz build_binary >"$KENLM/make.log" 2>&1 \
    || { tail -20 "$KENLM/make.log"; exit 1; }
  mkdir -p "$KENLM/bin" && cp "$KENLM/cmake/bin/lmplz" "$KENLM/cmake/bin/build_binary" "$KENLM/bin/"
fi

[ -f build/demo_corpus/train.tsv ] || nice -n 19 "$PY" tools/demo_corpus.py --out build/demo_corpus
"$PY" tools/demo_lm.py text --corpus build/demo_corpus/train.tsv --out "$WORK"
"$KENLM/bin/lmplz" -o "$ORDER" --prune $PRUNE -S 20% -T "$WORK" --discount_fallback \
  <"$WORK/lm_text.txt" >"$WORK/lm.arpa" 2>"$WORK/lmplz.log" || { tail -20 "$WORK/lmplz.log"; exit 1; }
# trie with 8-bit quantised probabilities and backoffs: the smallest form kenlm loads directly
"$KENLM/bin/build_binary" -q 8 -b 8 -a 22 trie "$WORK/lm.arpa" "$WORK/lm.bin" >"$WORK/build_binary.log" 2>&1 \
  || { tail -20 "$WORK/build_binary.log"; exit 1; }
tune=()
[ "${TUNE:-1}" = 1 ] && tune=(--tune)
nice -n 19 "$PY" tools/demo_lm.py layout --work "$WORK" --model "$OUT" "${tune[@]}"
ls -l "$OUT/alphabet.json" "$OUT/language_model"
