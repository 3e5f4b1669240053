#!/usr/bin/env bash
# The test command (README quick start, and what .ci/run calls): set up with the
# dev tools, then the gates: ruff lint + format check, mypy (strict on agent/,
# checked on tests/),
# pytest (real calls over loopback UDP, plus the headless-Chromium interop tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
echo "== ruff"
.venv/bin/ruff check agent tests benchmarks
.venv/bin/ruff format --check agent tests benchmarks
echo "== mypy (strict on agent/ and benchmarks/, checked on tests/)"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
