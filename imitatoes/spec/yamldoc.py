"""YAML documents that remember where every key and value stands, so messages carry lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imitatoes import files as specfiles
from imitatoes.errors import Problem, SpecError, UsageError

PathKey = tuple  # a path into the data: mapping keys (str) and list indices (int)


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class Document:
    """Parsed YAML data plus the position of each value and each mapping key."""

    path: Path
    data: Any
    values: dict[PathKey, Mark] = field(default_factory=dict)
    keys: dict[PathKey, Mark] = field(default_factory=dict)
    origins: dict[PathKey, str] = field(default_factory=dict)  # overridden paths
    duplicates: list[Problem] = field(default_factory=list)
    allow_outside: bool = False  # may name files outside its own folder tree (--allow-outside)
    read: dict[Any, Any] = field(default_factory=dict)  # files it names, read once (lint.read)

    def locate(self, where: PathKey, key: bool = False) -> Problem:
        """A Problem skeleton at `where` (the key itself when `key`), nearest known parent else."""
        for n in range(len(where), -1, -1):
            sub = tuple(where[:n])
            if sub in self.origins:
                return Problem(str(self.path), dotted(where), "", origin=self.origins[sub])
            mark = (self.keys.get(sub) if key else None) or self.values.get(sub)
            if mark:
                return Problem(str(self.path), dotted(where), "", mark.line, mark.col)
        return Problem(str(self.path), dotted(where), "")

    def problem(self, where: PathKey, message: str, key: bool = False) -> Problem:
        p = self.locate(where, key)
        return Problem(p.file, p.where, message, p.line, p.col, p.origin)


def dotted(where: PathKey) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read(path: Path) -> Document:
    """Read one YAML document; SpecError (with its line) for anything that is not a mapping."""
    text = _read_text(path)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character: the reader checks first
        raise _at(path, text, exc.position, f"a control character (U+{exc.character:04X}) is not "
                  "allowed in YAML; remove it or write it as an escape inside double quotes") \
            from None
    try:
        node = loader.get_single_node()
        _refuse_alias_bombs(path, node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise _unreadable(path, f"not valid YAML: {exc.problem or exc}", line, col) from None
    except yaml.YAMLError as exc:
        raise _unreadable(path, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise _unreadable(path, "nested too deeply to be a spec") from None
    finally:
        loader.dispose()
    if data is None:
        raise _unreadable(path, "the file is empty; a spec is a YAML mapping (see specs/)")
    if not isinstance(data, dict):
        kind = type(data).__name__.replace("str", "text")
        raise _unreadable(path, f"a spec is a mapping (name:, goal:, ...), not {kind}", 1, 1)
    doc = Document(path, data)
    _index(doc, node, ())
    return doc


ALIAS_GROWTH = 10_000  # values that aliases may add; a spec needs a handful at most


def _refuse_alias_bombs(path: Path, node: yaml.Node | None) -> None:
    """Aliases reuse a node; nested, a few lines become billions of values (a "billion
    laughs"). Count what they would expand to before anything walks the tree."""
    sizes: dict[int, int] = {}
    unique = 0

    def size(n: yaml.Node, open_: set[int]) -> int:
        nonlocal unique
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in open_:
            raise _unreadable(path, "an alias refers to a node that contains it (a loop)",
                              n.start_mark.line + 1, n.start_mark.column + 1)
        unique += 1
        children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) \
            else n.value if isinstance(n, yaml.SequenceNode) else []
        total = 1 + sum(size(c, open_ | {id(n)}) for c in children)
        if total - unique > ALIAS_GROWTH:
            raise _unreadable(path, f"its aliases expand to more than {ALIAS_GROWTH:,} values "
                              "(a YAML bomb?); a spec needs no aliases that large",
                              n.start_mark.line + 1, n.start_mark.column + 1)
        sizes[id(n)] = total
        return total

    if node is not None:
        size(node, set())


def _at(path: Path, text: str, position: int, message: str) -> SpecError:
    line = text.count("\n", 0, position) + 1
    return _unreadable(path, message, line, position - text.rfind("\n", 0, position))


def _unreadable(path: Path, message: str, line: int = 0, col: int = 0) -> SpecError:
    return SpecError(Problem(str(path), "", message, line, col))


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise _unreadable(path, "is a directory; give the path of a spec file (.yaml)")
    try:
        return specfiles.read_text(path, specfiles.SPEC_CAP)
    except specfiles.Unreadable as exc:
        raise _unreadable(path, str(exc)) from None


def _index(doc: Document, node: yaml.Node, where: PathKey) -> None:
    doc.values[where] = Mark(node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            sub = (*where, key)
            if key in seen:
                mark = Mark(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                doc.duplicates.append(Problem(str(doc.path), dotted(sub),
                                              "duplicate key: the later value silently wins",
                                              mark.line, mark.col))
            seen.add(key)
            doc.keys[sub] = Mark(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _index(doc, value_node, sub)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(doc, item, (*where, i))


def parse_override(text: str) -> tuple[PathKey, Any]:
    """`a.b=value` -> (("a", "b"), value), the value read as a YAML scalar (3 is a number)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text}: expected KEY.PATH=VALUE, e.g. --set limits.max_loops=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return tuple(key.strip().split(".")), value


def apply_override(doc: Document, where: PathKey, value: Any, origin: str) -> None:
    """Set `where` in the document, creating mappings on the way; remember where it came from."""
    target = doc.data
    for i, part in enumerate(where[:-1]):
        nxt = target.get(part) if isinstance(target, dict) else None
        if not isinstance(nxt, dict):
            if not isinstance(target, dict):
                raise UsageError(f"{origin}: {dotted(where[:i])} is not a mapping, cannot set "
                                 f"{dotted(where)}")
            nxt = target[part] = {}
        target = nxt
    if not isinstance(target, dict):
        raise UsageError(f"{origin}: cannot set {dotted(where)}")
    target[where[-1]] = value
    doc.origins[tuple(where)] = origin
