"""Load/compile problems with a location, printed as `file:line:col: message` or OPA's error JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    col: int
    message: str
    code: str = "rego_parse_error"

    def __str__(self) -> str:
        if self.line <= 0:  # the whole file (it is missing, or unreadable): no position to give
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def to_opa(self) -> dict[str, Any]:
        """OPA's error shape (`opa check --format json`): code, message, location{file,row,col}."""
        return {
            "code": self.code,
            "message": self.message,
            "location": {"file": self.file, "row": self.line, "col": self.col},
        }


def yaml_problem(file: str, exc: Exception, code: str = "load_error") -> Problem:
    """A PyYAML error, located at its problem mark (1-based) when it has one."""
    mark = getattr(exc, "problem_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return Problem(file, line, col, f"invalid YAML: {getattr(exc, 'problem', None) or exc}", code)


class PolicyLoadError(Exception):
    """One or more problems stop the policies from loading. Never a partial load."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
