"""Helpers shared by tests: fixtures on disk and running stand-ins."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def fixture(kind: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / kind / name).read_text())


def shape(value: Any) -> Any:
    """Keys and value types, with prompt ids as dict keys folded to <id>."""
    if isinstance(value, dict):
        return {("<id>" if UUID.match(str(k)) else k): shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def same_shape(got: Any, want: Any, where: str = "") -> list[str]:
    """Differences in structure; lists compare element by element as far as both go."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{where}: expected an object, got {got!r}"]
        out = []
        if set(got) != set(want):
            out.append(f"{where}: keys {sorted(got)} != {sorted(want)}")
        for key in set(got) & set(want):
            out += same_shape(got[key], want[key], f"{where}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(got, list):
            return [f"{where}: expected a list, got {got!r}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=False))
                for d in same_shape(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: type {got} != {want}"]
