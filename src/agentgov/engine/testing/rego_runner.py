"""Run Rego unit tests: every `test_*` rule must evaluate to true; `todo_test_*` rules are skipped."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from agentgov.engine.backends.base import first_line, is_fatal
from agentgov.engine.backends.rego import build_engine
from agentgov.engine.policy.rego_check import ref_parts
from agentgov.engine.testing.results import Coverage, TestResult


def discover_tests(engine: Any) -> list[tuple[str, str, str]]:
    """(package, rule, file) for every test and todo rule, in source order."""
    found: list[tuple[str, str, str]] = []
    for entry in json.loads(engine.get_ast_as_json()):
        ast = entry["ast"]
        package = "data." + ".".join(ref_parts(ast["package"]["refr"]))
        for rule in ast.get("rules", []):
            head = rule.get("Spec", {}).get("head", {})
            ref = (head.get("Compr") or {}).get("refr")
            if not ref or "Var" not in ref:
                continue
            name = ref["Var"]["value"]
            if name.startswith(("test_", "todo_test_")) and (package, name, entry["source"]["file"]) not in found:
                found.append((package, name, entry["source"]["file"]))
    return found


def run_rego_tests(modules: list[tuple[str, str]], tests: list[tuple[str, str]], data: Mapping[str, Any],
                   pattern: re.Pattern[str] | None, coverage: Coverage | None) -> list[TestResult]:
    engine = build_engine(modules + tests, data)
    if coverage is not None:
        engine.set_enable_coverage(True)
    engine.set_input_json("{}")
    test_files = {file for file, _ in tests}
    results: list[TestResult] = []
    for package, name, file in discover_tests(engine):
        if file not in test_files:
            continue
        full = f"{package}.{name}"
        if pattern is not None and not pattern.search(full):
            continue
        suite = f"rego:{package}"
        if name.startswith("todo_"):
            results.append(TestResult(full, suite, "rego", "skip", file, message="todo"))
            continue
        started = time.perf_counter()
        try:
            value = engine.eval_rule(full)
        except BaseException as exc:
            if is_fatal(exc):
                raise
            results.append(TestResult(full, suite, "rego", "error", file, time.perf_counter() - started,
                                      message=f"engine error: {first_line(f'{type(exc).__name__}: {exc}')}"))
            continue
        elapsed = time.perf_counter() - started
        if value is True:
            results.append(TestResult(full, suite, "rego", "pass", file, elapsed))
        else:
            shown = "undefined" if value is None else json.dumps(value)
            results.append(TestResult(full, suite, "rego", "fail", file, elapsed,
                                      message=f"test rule evaluated to {shown}, expected true"))
    if coverage is not None:
        for entry in json.loads(engine.get_coverage_report_as_json()).get("files", []):
            if entry["path"] not in test_files:
                coverage.add_rego(entry["path"], entry["covered"], entry["not_covered"])
    return results
