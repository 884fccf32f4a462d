"""Render a SuiteReport as text for people, JSON for tools, or JUnit XML for CI systems."""

from __future__ import annotations

import json
from collections import defaultdict
from xml.etree import ElementTree as ET

from agentgov.engine.testing.results import TestResult
from agentgov.engine.testing.suite import SuiteReport

_MARK = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIP"}


def _label(r: TestResult) -> str:
    return f"{r.name} [{r.engine}]"


def render_pretty(report: SuiteReport, *, verbose: bool) -> str:
    lines: list[str] = []
    for r in report.results:
        if r.outcome in ("fail", "error"):
            lines.append(f"{_MARK[r.outcome]}: {_label(r)} ({r.file})")
            if r.message:
                lines.append(f"  {r.message}")
            if r.diff:
                lines.extend(f"  {d}" for d in r.diff.splitlines())
        elif verbose:
            lines.append(f"{_MARK[r.outcome]}: {_label(r)} ({r.duration_s * 1000:.2f}ms)")
    if lines:
        lines.append("-" * 60)
    summary = f"{report.count('pass')} passed, {report.count('fail') + report.count('error')} failed"
    if report.count("skip"):
        summary += f", {report.count('skip')} skipped"
    engines = sorted({r.engine for r in report.results})
    lines.append(f"{summary} ({report.ran} tests ran across {', '.join(engines) or 'no engine'})")
    cov = report.coverage
    if cov is not None:
        rego, cedar = cov.rego_percent(), cov.cedar_percent()
        if rego is not None:
            lines.append(f"rego line coverage: {rego:.1f}%")
            for file, (covered, missed) in sorted(cov.rego_lines.items()):
                uncovered = sorted(missed - covered)
                if uncovered:
                    lines.append(f"  {file}: not covered lines {uncovered}")
        if cedar is not None:
            lines.append(f"cedar policy coverage: {cedar:.1f}%")
            never = sorted(p for p, hit in cov.cedar_policies.items() if not hit)
            if never:
                lines.append(f"  never applied: {', '.join(never)}")
    return "\n".join(lines)


def render_json(report: SuiteReport) -> str:
    doc: dict[str, object] = {
        "summary": {
            "passed": report.count("pass"), "failed": report.count("fail"),
            "errors": report.count("error"), "skipped": report.count("skip"),
        },
        "results": [
            {"name": r.name, "suite": r.suite, "engine": r.engine, "outcome": r.outcome, "location": r.file,
             "duration_ms": round(r.duration_s * 1000, 3), "message": r.message, "diff": r.diff}
            for r in report.results
        ],
    }
    if report.coverage is not None:
        doc["coverage"] = {
            "rego_lines_percent": report.coverage.rego_percent(),
            "cedar_policies_percent": report.coverage.cedar_percent(),
            "percent": report.coverage.percent(),
        }
    return json.dumps(doc, indent=2)


def render_junit(report: SuiteReport) -> str:
    """JUnit XML: one <testsuite> per Rego package or case file, one <testcase> per test and engine."""
    suites: dict[str, list[TestResult]] = defaultdict(list)
    for r in report.results:
        suites[r.suite].append(r)
    root = ET.Element("testsuites", name="agentgov", tests=str(len(report.results)),
                      failures=str(report.count("fail")), errors=str(report.count("error")),
                      skipped=str(report.count("skip")),
                      time=f"{sum(r.duration_s for r in report.results):.6f}")
    for name, results in suites.items():
        suite = ET.SubElement(root, "testsuite", name=name, tests=str(len(results)),
                              failures=str(sum(r.outcome == "fail" for r in results)),
                              errors=str(sum(r.outcome == "error" for r in results)),
                              skipped=str(sum(r.outcome == "skip" for r in results)),
                              time=f"{sum(r.duration_s for r in results):.6f}")
        for r in results:
            case = ET.SubElement(suite, "testcase", name=_label(r), classname=name, file=r.file.split(":")[0],
                                 time=f"{r.duration_s:.6f}")
            if r.outcome == "fail":
                ET.SubElement(case, "failure", message=r.message, type="DecisionMismatch").text = r.diff or r.message
            elif r.outcome == "error":
                ET.SubElement(case, "error", message=r.message, type="EngineError").text = r.message
            elif r.outcome == "skip":
                ET.SubElement(case, "skipped", message=r.message or "skipped")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def render_junit_load_error(problems: list[str]) -> str:
    """A load or compile error as JUnit: one errored testcase, so a CI system shows why nothing ran
    (an empty report would read as "no tests", or be dropped)."""
    root = ET.Element("testsuites", name="agentgov", tests="1", failures="0", errors="1", skipped="0", time="0")
    suite = ET.SubElement(root, "testsuite", name="load", tests="1", failures="0", errors="1", skipped="0", time="0")
    case = ET.SubElement(suite, "testcase", name="load policies", classname="load", time="0")
    message = f"{len(problems)} load or compile error(s)"
    ET.SubElement(case, "error", message=message, type="PolicyLoadError").text = "\n".join(problems)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
