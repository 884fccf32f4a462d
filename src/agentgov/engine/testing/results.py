"""Test outcomes, shared by the Rego runner, the case runner and the reporters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["pass", "fail", "error", "skip"]


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest class

    name: str
    suite: str  # e.g. "rego:data.agentgov_test" or "cases:policies/tests/tools.yaml"
    engine: str
    outcome: Outcome
    file: str
    duration_s: float = 0.0
    message: str = ""
    diff: str = ""


@dataclass
class Coverage:
    """Rego line coverage (per non-test file) and Cedar policy coverage (policies that ever applied)."""

    rego_lines: dict[str, tuple[set[int], set[int]]] = field(default_factory=dict)  # file → (covered, not)
    cedar_policies: dict[str, bool] = field(default_factory=dict)

    def add_rego(self, file: str, covered: list[int], not_covered: list[int]) -> None:
        cov, miss = self.rego_lines.setdefault(file, (set(), set()))
        cov.update(covered)
        miss.update(not_covered)

    def rego_percent(self) -> float | None:
        covered = sum(len(c) for c, _ in self.rego_lines.values())
        missed = sum(len(m - c) for c, m in self.rego_lines.values())
        total = covered + missed
        return 100.0 * covered / total if total else None

    def cedar_percent(self) -> float | None:
        if not self.cedar_policies:
            return None
        return 100.0 * sum(self.cedar_policies.values()) / len(self.cedar_policies)

    def percent(self) -> float | None:
        """The figure `--threshold` checks: the lower of the engines' coverages."""
        values = [v for v in (self.rego_percent(), self.cedar_percent()) if v is not None]
        return min(values) if values else None
