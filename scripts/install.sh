#!/usr/bin/env bash
# Create .venv (once) and install imitatoes with its development tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
echo "installed: $(.venv/bin/imitatoes --version)"
