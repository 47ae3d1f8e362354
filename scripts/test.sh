#!/usr/bin/env bash
# Lint and test from the venv; non-zero on any failure. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
