"""The package's import graph: the layers are folders, a lower one never imports a higher one,
and no module reaches back to one that imports it (the stand-ins, servers of their own, may),
so a newcomer can read the package from the bottom up (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "imitatoes"


def module_name(path: Path) -> str:
    parts = path.with_suffix("").relative_to(ROOT).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """Our modules this file imports, at the top or inside a function."""
    package = module_name(path) if path.name == "__init__.py" else \
        module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known
                          else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(g[node]):
            if nxt in path:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for node in sorted(g):
        visit(node, [node])
    return found


def test_the_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_outside_the_stand_ins() -> None:
    g = graph()
    assert "imitatoes.commands.lifecycle" in g["imitatoes.commands.cli"]  # the graph is really read
    outside = [c for c in cycles(g) if not all(m.startswith("imitatoes.standins") for m in c)]
    assert outside == []


# Bottom to top. The base modules (errors, safe_text, files, the package's __init__) sit under
# everything; the stand-ins are servers of their own and may use only the base and the
# workflow layer (ComfyUI's formats and node catalogue, which a ComfyUI stand-in speaks too).
LAYERS = ("workflow", "spec", "loop", "clients", "runs", "standins", "commands")
BASE = {"imitatoes", "imitatoes.errors", "imitatoes.safe_text", "imitatoes.files",
        "imitatoes.__main__"}


def layer(module: str) -> int:
    if module in BASE:
        return -1
    part = module.split(".")[1]
    return LAYERS.index(part)


def upward(g: dict[str, set[str]]) -> list[str]:
    """Each import of a higher layer, as "low -> high"."""
    found = []
    for name, deps in g.items():
        if name.startswith("imitatoes.standins"):
            found += [f"{name} -> {d}" for d in deps if not d.startswith("imitatoes.standins")
                      and d not in BASE and not d.startswith("imitatoes.workflow")]
        elif name != "imitatoes.__main__":
            found += [f"{name} -> {d}" for d in deps if layer(d) > layer(name)]
    return sorted(found)


def test_every_module_lives_in_a_layer() -> None:
    strays = [m for m in graph() if m not in BASE and m.split(".")[1] not in
              LAYERS]
    assert strays == []


def test_the_layer_check_sees_an_upward_import() -> None:
    assert upward({"imitatoes.loop.engine": {"imitatoes.runs.folder"}}) == \
        ["imitatoes.loop.engine -> imitatoes.runs.folder"]
    assert upward({"imitatoes.runs.folder": {"imitatoes.loop.state"}}) == []


def test_lower_layers_never_import_higher_ones() -> None:
    g = graph()
    assert "imitatoes.loop.engine" in g["imitatoes.commands.lifecycle"]
    assert upward(g) == []


def loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_the_spec_model_and_the_loop_load_no_yaml_schema_or_network() -> None:
    model = loaded_by("imitatoes.spec.model")
    assert not {"yaml", "jsonschema", "requests"} & model
    assert "imitatoes.spec.load" not in model
    # the loop validates the critic's answers (jsonschema) but never reads YAML or the network
    assert not {"yaml", "requests"} & loaded_by("imitatoes.loop.engine")


def long_functions(limit: int = 50) -> list[str]:
    """Functions over `limit` lines, outside the stand-ins (servers of their own)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "standins" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{module_name(path)}.{node.name}: {lines} lines")
    return found


def test_no_function_is_over_fifty_lines() -> None:
    assert long_functions(limit=5)  # the finder sees functions
    assert long_functions() == []
