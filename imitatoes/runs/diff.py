"""`imitatoes diff RUN_A RUN_B`: what differs between two runs (the spec, what made the
images, and the parameters and scores iteration by iteration), so last week's run and
today's can be put side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from imitatoes.runs import folder as runfolder
from imitatoes.runs import provenance


def compare(a: Path, b: Path) -> dict[str, Any]:
    return {"runs": {"a": str(a), "b": str(b)},
            "outcome": {"a": _outcome(a), "b": _outcome(b)},
            "spec": runfolder.differences(_spec(a), _spec(b)),
            "workflow": runfolder.differences(_json(a / "workflow.json"),
                                              _json(b / "workflow.json")),
            "provenance": provenance.changes(provenance.latest(a), provenance.latest(b)),
            "iterations": _iterations(a, b)}


def _spec(run_dir: Path) -> Any:
    return yaml.safe_load((run_dir / "spec.yaml").read_text()) or {}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _outcome(run_dir: Path) -> dict[str, Any]:
    s = runfolder.read_state(run_dir)
    return {"status": s.status, "renders": s.renders, "done": s.done_key,
            "best": {"key": s.best.key, "score": s.best.score} if s.best else None,
            "instructions": list(s.instructions)}


def _row(record: runfolder.IterationRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    p = record.params
    return {"seed": p.seed, "cfg": p.cfg, "steps": p.steps, "score": record.score,
            "prompt": p.prompt, "negative": p.negative}


def _iterations(a: Path, b: Path) -> list[dict[str, Any]]:
    ra = {r.key: r for r in runfolder.records(a)}
    rb = {r.key: r for r in runfolder.records(b)}
    return [{"key": k, "a": _row(ra.get(k)), "b": _row(rb.get(k))}
            for k in sorted(set(ra) | set(rb))]


def text(result: dict[str, Any]) -> str:
    a, b = result["outcome"]["a"], result["outcome"]["b"]
    lines = [f"A: {result['runs']['a']}", f"B: {result['runs']['b']}", "",
             f"outcome  A: {_said(a)}", f"         B: {_said(b)}", ""]
    for title in ("spec", "workflow", "provenance"):
        found = result[title]
        lines.append(f"{title}: " + ("the same" if not found else f"{len(found)} difference(s)"))
        lines += [f"  {line}" for line in found]
    lines += ["", f"{'iteration':<17}{'A: seed cfg steps score':<34}B: seed cfg steps score"]
    for row in result["iterations"]:
        marker = "" if _same(row["a"], row["b"]) else "  *"
        lines.append(f"{row['key']:<17}{_cells(row['a']):<34}{_cells(row['b'])}{marker}")
    lines.append("(* the iterations differ in their parameters, prompt or score)")
    return "\n".join(lines)


def _said(o: dict[str, Any]) -> str:
    best = f"best {o['best']['key']} ({o['best']['score']:.2f})" if o["best"] else "no best"
    return f"{o['status']} after {o['renders']} render(s), {best}"


def _cells(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    score = "-" if row["score"] is None else f"{row['score']:.2f}"
    return f"{row['seed']} {row['cfg']:g} {row['steps']} {score}"


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return a == b
