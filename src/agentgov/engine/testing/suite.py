"""`agentgov test`: Rego unit tests plus YAML decision cases, one result list, one coverage figure."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgov.engine.backends.base import DecisionBackend, decision_from_document
from agentgov.engine.backends.cedar import CedarBackend
from agentgov.engine.backends.envoy_result import OPA_ENVOY_DEFAULT_RULE, decision_from_envoy_result
from agentgov.engine.backends.rego import DEFAULT_RULE, RegoBackend
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.library import ENGINES, build_backends, check_sources
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.policy.sources import PolicySources
from agentgov.engine.testing.cases import Case, CaseRunner, load_cases
from agentgov.engine.testing.rego_runner import run_rego_tests
from agentgov.engine.testing.results import Coverage, Outcome, TestResult


@dataclass
class SuiteReport:
    results: list[TestResult] = field(default_factory=list)
    coverage: Coverage | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def ran(self) -> int:
        return sum(1 for r in self.results if r.outcome != "skip")

    @property
    def ok(self) -> bool:
        return self.count("fail") == 0 and self.count("error") == 0


def run_suite(paths: Sequence[str | Path], *, pattern: str | None = None, coverage: bool = False,
              rule: str | None = None, input_format: str = "agentgov") -> SuiteReport:
    """Load everything first (PolicyLoadError on any problem), then run every test. Cases run in
    groups by their file's rule and input format, each group on backends built for it."""
    sources = discover(paths)
    problems = check_sources(sources)
    if problems:
        raise PolicyLoadError(problems)
    regex = re.compile(pattern) if pattern else None
    cases: list[Case] = []
    for file in sources.case_files:
        cases.extend(load_cases(file, ENGINES, input_format))
    report = SuiteReport(coverage=Coverage() if coverage else None)
    if sources.rego_tests:
        report.results.extend(run_rego_tests(sources.rego, sources.rego_tests, sources.data, regex, report.coverage))
    groups: dict[tuple[str, str], list[Case]] = {}
    for case in cases:
        default = OPA_ENVOY_DEFAULT_RULE if case.input_format == "opa-envoy" else DEFAULT_RULE
        groups.setdefault((case.rule or rule or default, case.input_format), []).append(case)
    for (group_rule, group_format), group in groups.items():
        _run_cases(report, sources, group, group_rule, group_format, regex)
    return report


def _run_cases(report: SuiteReport, sources: PolicySources, cases: list[Case], rule: str, input_format: str,
               regex: re.Pattern[str] | None) -> None:
    reader = decision_from_envoy_result if input_format == "opa-envoy" else decision_from_document

    def build(data: Mapping[str, Any] | None = None) -> dict[str, DecisionBackend]:
        built = build_backends(sources, rule=rule, data=data, reader=reader)
        if report.coverage is not None:
            _enable_coverage(built)
        return built

    backends = build()
    runner = CaseRunner(backends, build)
    outcomes = asyncio.run(runner.run(cases, sources.data, regex))
    for o in outcomes:
        outcome: Outcome = "pass" if not o.mismatches else "fail"
        report.results.append(TestResult(
            name=o.case.name, suite=f"cases:{o.case.file}", engine=o.engine, outcome=outcome,
            file=f"{o.case.file}:{o.case.line}", duration_s=o.elapsed_s,
            message="; ".join(o.mismatches), diff=o.diff))
    if report.coverage is not None:
        _collect_coverage(report.coverage, [backends, *runner.override_backends()])


def _enable_coverage(backends: Mapping[str, DecisionBackend]) -> None:
    rego = backends.get("rego")
    if isinstance(rego, RegoBackend):
        rego.enable_coverage()


def _collect_coverage(coverage: Coverage, backend_sets: list[Mapping[str, DecisionBackend]]) -> None:
    for backends in backend_sets:
        rego = backends.get("rego")
        if isinstance(rego, RegoBackend):
            for entry in rego.coverage_report():
                coverage.add_rego(entry["path"], entry["covered"], entry["not_covered"])
        cedar = backends.get("cedar")
        if isinstance(cedar, CedarBackend):
            for pid in cedar.policy_ids():
                coverage.cedar_policies[pid] = coverage.cedar_policies.get(pid, False) or cedar.applied[pid] > 0
