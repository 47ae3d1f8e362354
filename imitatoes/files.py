"""The files a spec names (its workflow, its critic template) and the spec itself, read with
care: a spec cloned from someone else's repository must not read /etc/passwd and send it to
its critic URL, and `workflow: /dev/zero` or a FIFO must not hang or exhaust `validate`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SPEC_CAP = 1 * 2**20
WORKFLOW_CAP = 16 * 2**20
TEMPLATE_CAP = 1 * 2**20


class Unreadable(Exception):
    """Why a file cannot be read, in words that fit after its path."""


def read_text(path: Path, cap: int) -> str:
    """A regular file's text, at most `cap` bytes, UTF-8."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except OSError as exc:
        raise Unreadable(f"cannot read it: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise Unreadable("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise Unreadable("is not a regular file (a device, FIFO or socket)")
    if info.st_size > cap:
        raise Unreadable(f"is {info.st_size:,} bytes, more than the {cap:,} a spec's file may "
                         "have")
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)  # it may have grown since stat
    except OSError as exc:
        raise Unreadable(f"cannot read it: {exc.strerror}") from None
    if len(data) > cap:
        raise Unreadable(f"is more than the {cap:,} bytes a spec's file may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def home(spec_dir: Path) -> Path:
    """Where a spec's files may be: its git work tree, or its own folder outside git."""
    start = spec_dir.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def outside(path: Path, spec_dir: Path) -> str:
    """Why `path` may not be read for a spec in `spec_dir` ("" when it may)."""
    root = home(spec_dir)
    if path.resolve().is_relative_to(root):
        return ""
    kind = "git work tree" if (root / ".git").exists() else "folder"
    return (f"is outside {root} (the spec's {kind}); a spec reads only its own files unless "
            "--allow-outside is given")


def relative_path(base: Path, value: str) -> Path:
    """A path written in a document, resolved against the document's folder (tidied)."""
    return Path(os.path.normpath(base / value))
