#!/usr/bin/env bash
# Set up (if needed), lint and type-check, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh || { echo "test: lint failed, tests not run (scripts/lint.sh)" >&2; exit 1; }
exec .venv/bin/python -m pytest -q "$@"
