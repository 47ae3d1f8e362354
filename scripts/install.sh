#!/usr/bin/env bash
# Create .venv (once) and install imitatoes with its development tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# setuptools warns at length that an editable install prefers folders named like the package;
# ours is the package itself, so the warning says nothing here.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install --quiet -r requirements-dev.txt
# An editable install leaves our modules uncompiled; where PYTHONDONTWRITEBYTECODE is set every
# command would compile them again (30 ms of each start). pip compiles every other package.
.venv/bin/python -m compileall -q imitatoes
echo "installed: $(.venv/bin/imitatoes --version)"
