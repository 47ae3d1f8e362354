"""The spec reference in docs/spec.md, made from the JSON Schema so the two cannot drift:
one row per field with its type, its default and the schema's own description.
`python -m imitatoes.spec.reference docs/spec.md` writes it between the markers there; a
test fails when the page and the schema disagree."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from imitatoes.spec import lint

BEGIN, END = "<!-- reference: made from the schema -->", "<!-- reference: end -->"


def rows(node: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[str]:
    needed = set(node.get("required") or ())
    for name, field in (node.get("properties") or {}).items():
        if name == "$schema":
            continue
        where = ".".join((*path, name))
        default = "required" if name in needed else _default(field)
        yield f"| `{where}` | {_type(field)} | {default} | {_said(field)} |"
        yield from rows(field, (*path, name))


def _type(field: Mapping[str, Any]) -> str:
    if "enum" in field:
        return " \\| ".join(f"`{v}`" for v in field["enum"])
    kind = field.get("type", "")
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _default(field: Mapping[str, Any]) -> str:
    if "default" not in field or field.get("type") == "object":
        return ""
    return f"`{json.dumps(field['default'])}`"


def _said(field: Mapping[str, Any]) -> str:
    text = str(field.get("description", "")).replace("|", "\\|").replace("\n", " ")
    lo, hi = field.get("minimum", field.get("exclusiveMinimum")), field.get("maximum")
    bounds = f" ({lo} to {hi})" if lo is not None and hi is not None else ""
    return text + bounds


def markdown(schema: Mapping[str, Any]) -> str:
    head = ["| field | type | default | what it is |", "| --- | --- | --- | --- |"]
    return "\n".join([BEGIN, *head, *rows(schema), END])


def updated(page: str, schema: Mapping[str, Any]) -> str:
    """The page with its reference block made again."""
    before, _, rest = page.partition(BEGIN)
    _, _, after = rest.partition(END)
    return before + markdown(schema) + after


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.write_text(updated(target.read_text(), lint.schema()))
