"""The store of memory across runs: one JSON line per finished run (loop/memory.Entry),
appended, in the user's own data folder unless the spec names a file. A store that is not
the user's own is never read; a damaged one is set aside (renamed, never deleted) with one
line, and the run starts with an empty memory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from imitatoes import files
from imitatoes.loop.memory import Entry

CAP = 64 * 2**20  # bytes read at most: memory is a hint, never worth a stall
KEPT = 2000  # the latest runs a new run learns from


@dataclass(frozen=True)
class Loaded:
    entries: tuple[Entry, ...]
    note: str = ""  # one line when the store was refused or set aside
    writable: bool = True  # False: not the user's own, leave it alone


def read(path: Path) -> Loaded:
    """The entries in the store, the latest per run; an empty memory for a missing store."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return Loaded(())
    except OSError as exc:
        return Loaded((), f"{path} cannot be read ({exc.strerror}); this run starts "
                          "without it", writable=False)
    if info.st_uid != os.getuid():
        return Loaded((), f"{path} belongs to another user; a run reads only its "
                          "user's own memory, so this one starts without it", writable=False)
    try:
        text = files.read_text(path, CAP)
    except files.Unreadable as exc:
        return _set_aside(path, str(exc))
    entries: dict[str, Entry] = {}
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], 1):  # the last is empty, or being written
        if not line.strip():
            continue
        try:
            found = Entry.from_dict(json.loads(line))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _set_aside(path, f"line {number}: {str(exc)[:80]}")
        entries.pop(found.run, None)
        entries[found.run] = found  # a run resumed and finished again: its latest entry
    return Loaded(tuple(entries.values())[-KEPT:])


def _set_aside(path: Path, why: str) -> Loaded:
    aside = path.with_name(path.name + ".damaged")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{n}")
    try:
        path.rename(aside)
    except OSError as exc:
        return Loaded((), f"{path} is damaged ({why}) and could not be set aside "
                          f"({exc.strerror}); this run starts without it", writable=False)
    return Loaded((), f"{path} was damaged ({why}); set aside as {aside.name}, and "
                      "this run starts with an empty memory")


def add(path: Path, entry: Entry) -> None:
    """Append one run's entry in a single write (runs of a batch append side by side)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = (json.dumps(entry.to_dict(), separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def clear(path: Path) -> bool:
    """Forget everything; whether there was a store to forget."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
