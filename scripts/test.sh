#!/usr/bin/env bash
# Quickstart tests: set up, lint, then run the CPU test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks experiments
.venv/bin/python -m pytest -q -n 2 "$@"
