"""The memory store on disk: appended, read back, set aside when damaged, never another
user's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imitatoes.loop import memory
from imitatoes.runs import memory as store
from imitatoes.spec import load as specs
from tests.conftest import ROOT

DEMO = specs.load(ROOT / "imitatoes" / "data" / "demo.yaml", env={})


def entry(run: str) -> memory.Entry:
    return memory.entry(DEMO, "stand-in", run, [], DEMO.start, DEMO.requirements)


def test_entries_read_back_the_latest_per_run(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "memory.jsonl"
    for run in ("a", "b", "a"):
        store.add(path, entry(run))
    loaded = store.read(path)
    assert [e.run for e in loaded.entries] == ["b", "a"] and not loaded.note
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_line_still_being_written_is_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    store.add(path, entry("a"))
    with open(path, "a") as f:
        f.write('{"format": 1, "run": "b", "ke')
    assert [e.run for e in store.read(path).entries] == ["a"]


@pytest.mark.parametrize("line", ["not json", '{"format": 9}', '{"format": 1, "run": 5}',
                                  "[1, 2]", json.dumps({"format": 1})])
def test_a_damaged_store_is_set_aside_with_one_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "memory.jsonl"
    store.add(path, entry("a"))
    with open(path, "a") as f:
        f.write(line + "\n")
    loaded = store.read(path)
    assert loaded.entries == () and "\n" not in loaded.note
    assert "line 2" in loaded.note and "set aside as memory.jsonl.damaged" in loaded.note
    assert not path.exists() and (tmp_path / "memory.jsonl.damaged").is_file()
    store.add(path, entry("b"))  # the next run starts a fresh store
    assert [e.run for e in store.read(path).entries] == ["b"]


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_another_users_store_is_never_read(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    store.add(path, entry("a"))
    os.chown(path, 12345, 12345)
    loaded = store.read(path)
    assert loaded.entries == () and not loaded.writable
    assert "belongs to another user" in loaded.note


def test_clear_forgets(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    store.add(path, entry("a"))
    assert store.clear(path) and not store.clear(path)
    assert store.read(path).entries == ()
