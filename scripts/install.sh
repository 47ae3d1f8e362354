#!/usr/bin/env bash
# Create .venv (once), install imitatoes with its development tools, and put the `imitatoes`
# command on your PATH as pipx and uv do: a link in ~/.local/bin (IMITATOES_BIN_DIR to choose
# another folder; IMITATOES_NO_MODIFY_PATH=1 to leave your shell's start files alone).
# Safe to run again: pip runs only when the Python or the requirements changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv

# What the installed packages depend on; a matching stamp means nothing to do.
stamp=$(cat pyproject.toml requirements-dev.txt <(.venv/bin/python -VV) | cksum)
if [ "$(cat .venv/.imitatoes-installed 2>/dev/null)" != "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # setuptools warns at length that an editable install prefers folders named like the
    # package; ours is the package itself, so the warning says nothing here.
    PYTHONWARNINGS=ignore .venv/bin/python -m pip install --quiet -r requirements-dev.txt
    echo "$stamp" > .venv/.imitatoes-installed
fi
# An editable install leaves our modules uncompiled; where PYTHONDONTWRITEBYTECODE is set every
# command would compile them again (30 ms of each start). pip compiles every other package.
.venv/bin/python -m compileall -q imitatoes

bin=${IMITATOES_BIN_DIR:-$HOME/.local/bin}
mkdir -p "$bin"
ln -sfn "$PWD/.venv/bin/imitatoes" "$bin/imitatoes"
echo "installed: $(.venv/bin/imitatoes --version), as $bin/imitatoes"

case ":$PATH:" in
    *":$bin:"*) exit 0 ;;
esac
line="export PATH=\"$bin:\$PATH\"  # added by imitatoes' install.sh"
if [ "${IMITATOES_NO_MODIFY_PATH:-}" != 1 ]; then
    for rc in "$HOME/.profile" "$HOME/.bashrc" "$HOME/.zshrc"; do
        # .profile always (login shells read it); the others only where the user has them
        [ "$rc" = "$HOME/.profile" ] || [ -f "$rc" ] || continue
        grep -qsF "$line" "$rc" || printf '\n%s\n' "$line" >> "$rc"
    done
    echo "$bin is now on PATH in new shells; in this one, run: export PATH=\"$bin:\$PATH\""
else
    echo "$bin is not on your PATH; add it, or run .venv/bin/imitatoes"
fi
