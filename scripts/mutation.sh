#!/usr/bin/env bash
# Mutation testing of the loop's decision logic (not in CI): each mutant of the modules named
# in pyproject.toml [tool.mutmut] must be caught by their own tests. About 12 minutes on two
# cores; prints the score of each module. Extra arguments go to `mutmut run`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mutmut ] || .venv/bin/python -m pip install --quiet "mutmut==3.8.1"
rm -rf mutants
.venv/bin/mutmut run --max-children 2 "$@" > /dev/null 2>&1 || true
.venv/bin/python scripts/mutation_score.py
