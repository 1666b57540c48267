#!/usr/bin/env bash
# Lint and type-check (run by scripts/test.sh before the tests; settings in pyproject.toml):
# ruff over the package, the tests and the tools; mypy over the package (core and app fully typed).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/ruff check streamer tests tools; then
  echo "lint: ruff found problems (above); fix them, or run .venv/bin/ruff check --fix for the fixable ones" >&2
  exit 1
fi
if ! .venv/bin/mypy streamer; then
  echo "lint: mypy found type errors (above)" >&2
  exit 1
fi
