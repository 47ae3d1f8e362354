"""Typed errors. Modules raise them where a problem is found; only the CLI renders them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located as precisely as we can."""

    file: str
    where: str  # the dotted path inside the document, e.g. limits.max_loops
    message: str
    line: int = 0
    col: int = 0
    origin: str = ""  # set when the value came from --set or the environment, not the file

    def __str__(self) -> str:
        located = self.line and not self.origin
        place = f"{self.file}:{self.line}:{self.col}" if located else self.file
        where = f" {self.where}:" if self.where else ""
        origin = f" (from {self.origin})" if self.origin else ""
        return f"{place}:{where} {self.message}{origin}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.col,
                "path": self.where, "message": self.message, "origin": self.origin or None}


class ImitatoesError(Exception):
    """A problem the user can act on: the message says what, where and what to do; `hint`,
    when set by a caller that knows more (the run folder that can be resumed), comes after."""

    exit_code = 1
    hint = ""


class UsageError(ImitatoesError):
    exit_code = 2


class SpecError(ImitatoesError):
    """The spec cannot be read at all (missing file, broken YAML, ...)."""

    exit_code = 2

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class InvalidSpec(ImitatoesError):
    """The spec was read but has problems; `problems` holds every one of them."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class WorkflowError(ImitatoesError):
    exit_code = 2
