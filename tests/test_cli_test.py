"""`agentgov test` through the CLI: the shipped library, failures, exit codes, JUnit output."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import Result

from tests.conftest import POLICIES

Run = Callable[..., Result]


def test_shipped_library_passes_on_both_engines_with_coverage(run_cli: Run) -> None:
    result = run_cli("test", str(POLICIES), "--coverage", "--threshold", "90", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    engines = {r["engine"] for r in doc["results"]}
    assert engines == {"rego", "cedar"}
    assert doc["summary"]["passed"] >= 40
    assert doc["summary"]["failed"] == 0
    assert doc["coverage"]["rego_lines_percent"] >= 90
    assert doc["coverage"]["cedar_policies_percent"] >= 90
    # Every shared case ran on both engines.
    cases = [r for r in doc["results"] if r["suite"].startswith("cases:")]
    by_name: dict[str, set[str]] = {}
    for r in cases:
        by_name.setdefault(r["name"], set()).add(r["engine"])
    assert all(e == {"rego", "cedar"} for e in by_name.values())


def test_changed_expectation_exits_2_with_diff(run_cli: Run, policies_copy: Path) -> None:
    cases = policies_copy / "tests" / "library.cases.yaml"
    text = cases.read_text()
    cases.write_text(text.replace("reasons: [secret_detected], status: 403", "reasons: [secret_detected], status: 429", 1))
    result = run_cli("test", str(policies_copy))
    assert result.exit_code == 2
    assert "FAIL: secret in a prompt is always refused [rego]" in result.output
    assert "FAIL: secret in a prompt is always refused [cedar]" in result.output
    assert '-  "status": 429' in result.output
    assert '+  "status": 403' in result.output
    assert "status: expected 429, got 403" in result.output


def test_rego_syntax_error_exits_1_with_file_and_line(run_cli: Run, policies_copy: Path) -> None:
    (policies_copy / "rego" / "broken.rego").write_text("package broken\n\nx := \n")
    result = run_cli("test", str(policies_copy))
    assert result.exit_code == 1
    assert re.search(r"broken\.rego:4:1: expecting expression", result.output)


def test_cedar_syntax_error_exits_1_with_file_and_line(run_cli: Run, policies_copy: Path) -> None:
    (policies_copy / "cedar" / "broken.cedar").write_text(
        '// comment\n@id("ok")\npermit (principal, action, resource);\n\nforbid (principal, action, resource)\nwhen { x == };\n')
    result = run_cli("test", str(policies_copy))
    assert result.exit_code == 1
    assert "broken.cedar:5:1: cedar parse error" in result.output


def test_junit_output_is_valid_xml_with_one_testcase_per_test(run_cli: Run, policies_copy: Path) -> None:
    cases = policies_copy / "tests" / "library.cases.yaml"
    cases.write_text(cases.read_text().replace("reasons: [default_deny], status: 403}\n  - name: admin",
                                               "reasons: [tool_granted], status: 403}\n  - name: admin", 1))
    result = run_cli("test", str(policies_copy), "--format", "junit")
    assert result.exit_code == 2
    root = ET.fromstring(result.output.split("\n", 1)[1])
    testcases = root.findall(".//testcase")
    assert int(root.get("tests", "0")) == len(testcases) >= 40
    failures = root.findall(".//testcase/failure")
    assert len(failures) == 2  # the changed case, on each engine
    assert all('reasons: missing ["tool_granted"]' in (f.get("message") or "") for f in failures)
    assert len(root.findall(".//testcase/skipped")) == 1  # todo_test_
    assert int(root.get("failures", "0")) == 2


def test_run_filter_and_zero_tests_is_an_error(run_cli: Run) -> None:
    result = run_cli("test", str(POLICIES), "-r", "break-glass", "-v")
    assert result.exit_code == 0
    assert "PASS: break-glass with justification is allowed and flagged [cedar]" in result.output
    assert "analyst may query" not in result.output
    empty = run_cli("test", str(POLICIES), "-r", "no-such-test-name")
    assert empty.exit_code == 1
    assert "no tests ran" in empty.output
    allowed = run_cli("test", str(POLICIES), "-r", "no-such-test-name", "--allow-empty")
    assert allowed.exit_code == 0


def test_failing_rego_unit_test_is_reported(run_cli: Run, policies_copy: Path) -> None:
    (policies_copy / "rego" / "extra_test.rego").write_text(
        "package extra_test\nimport rego.v1\nimport data.agentgov\n"
        "test_wrong if { agentgov.allow with input as {} }\n")
    result = run_cli("test", str(policies_copy))
    assert result.exit_code == 2
    assert "FAIL: data.extra_test.test_wrong [rego]" in result.output
    assert "evaluated to undefined" in result.output


def test_coverage_threshold_failure_exits_2(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(
        "package agentgov\nimport rego.v1\ndefault allow := false\nallow if input.a == 1\n"
        "allow if {\n  input.b == 2\n  input.c == 3\n}\n")
    (tmp_path / "p_test.rego").write_text(
        "package p_test\nimport rego.v1\nimport data.agentgov\ntest_a if agentgov.allow with input as {\"a\": 1}\n")
    ok = run_cli("test", str(tmp_path), "--coverage")
    assert ok.exit_code == 0
    low = run_cli("test", str(tmp_path), "--coverage", "--threshold", "99")
    assert low.exit_code == 2
    assert "below the threshold" in low.output


def test_invalid_case_file_exits_1_with_location(run_cli: Run, policies_copy: Path) -> None:
    (policies_copy / "tests" / "bad.cases.yaml").write_text(
        "cases:\n  - name: typo in input\n    request: {subject: {rolez: [x]}, action: {kind: tool.call},"
        " resource: {type: tool, id: a}}\n    expect: {allow: false}\n")
    result = run_cli("test", str(policies_copy))
    assert result.exit_code == 1
    assert "bad.cases.yaml:2:1" in result.output
    assert "rolez" in result.output


def test_panicking_policy_denies_in_test(run_cli: Run, tmp_path: Path) -> None:
    """Relies on a regorus panic (strings.count with an empty separator); real OPA reports an error."""
    (tmp_path / "p.rego").write_text(
        "package agentgov\nimport rego.v1\ndefault allow := false\n"
        "allow if strings.count(input.arguments.q, \"\") > 0\n"
        "decision := {\"allow\": allow, \"reasons\": []}\n")
    (tmp_path / "c.cases.yaml").write_text(
        "cases:\n  - name: panic is a deny\n    request: {action: {kind: tool.call}, resource: {type: tool, id: x},"
        " arguments: {q: abc}}\n    expect: {allow: true}\n")
    result = run_cli("test", str(tmp_path))
    assert result.exit_code == 2
    assert "allow: expected true, got false" in result.output
    assert "engine_error" in result.output
    assert "window size must be non-zero" in result.output


OPA_ENVOY_POLICY = """package envoy.authz

import rego.v1

default allow := false

allow if {
    input.attributes.request.http.method == "GET"
    startswith(input.parsed_path[0], "public")
}

result := {"allowed": false, "http_status": 418} if not allow

result := {"allowed": true} if allow
"""

OPA_ENVOY_CASES = """input_format: opa-envoy
cases:
  - name: a public GET is allowed
    request:
      attributes: {request: {http: {method: GET, path: /public/x, headers: {}}}}
      parsed_path: [public, x]
    expect: {allow: true}
  - name: a POST is denied
    request:
      attributes: {request: {http: {method: POST, path: /public/x, headers: {}}}}
      parsed_path: [public, x]
    expect: {allow: false, reasons: [default_deny]}
"""


def _opa_envoy_folder(tmp_path: Path, cases: str) -> Path:
    (tmp_path / "authz.rego").write_text(OPA_ENVOY_POLICY)
    (tmp_path / "authz.cases.yaml").write_text(cases)
    return tmp_path


def test_opa_envoy_cases_run_against_the_plugins_default_rule(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    result = run_cli("test", str(_opa_envoy_folder(tmp_path, OPA_ENVOY_CASES)))
    assert result.exit_code == 0, result.output
    assert "2 passed, 0 failed" in result.output


def test_a_case_files_rule_and_the_input_format_flag(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    with_rule = OPA_ENVOY_CASES.replace("input_format: opa-envoy\n", "rule: data.envoy.authz.result\n").replace(
        "expect: {allow: false, reasons: [default_deny]}", "expect: {allow: false, status: 418}")
    folder = _opa_envoy_folder(tmp_path, with_rule)
    assert run_cli("test", str(folder)).exit_code == 1  # read as agentgov inputs, these requests are invalid
    result = run_cli("test", str(folder), "--input-format", "opa-envoy")
    assert result.exit_code == 0, result.output
    wrong = run_cli("test", str(_opa_envoy_folder(tmp_path, with_rule.replace("status: 418}", "status: 403}"))),
                    "--input-format", "opa-envoy")
    assert wrong.exit_code == 2


@pytest.mark.parametrize(("header", "message"), [
    ("rule: envoy.authz.allow\n", "`rule` must be a Rego rule path"),
    ("input_format: grpc\n", "`input_format` must be one of"),
    ("ruel: data.x\n", "unknown case-file key(s): ruel"),
])
def test_bad_case_file_settings_are_load_errors(run_cli: Callable[..., Result], tmp_path: Path, header: str,
                                                message: str) -> None:
    folder = _opa_envoy_folder(tmp_path, header + OPA_ENVOY_CASES.split("\n", 1)[1])
    result = run_cli("test", str(folder))
    assert result.exit_code == 1
    assert message in result.output


def test_opa_envoy_cases_cannot_ask_for_cedar(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    cases = OPA_ENVOY_CASES.replace("  - name: a POST is denied\n", "  - name: a POST is denied\n    engines: [cedar]\n")
    result = run_cli("test", str(_opa_envoy_folder(tmp_path, cases)))
    assert result.exit_code == 1
    assert "decided by Rego only" in result.output


def test_a_case_overlay_shares_the_data_it_does_not_change() -> None:
    from agentgov.engine.testing.cases import overlay

    catalog = {"tool": {"a": {"roles": ["x"]}, "b": {"roles": ["y"]}}, "model": {"m": {"roles": ["x"]}}}
    merged = overlay(catalog, {"tool": {"a": {"roles": ["z"]}}})
    assert merged == {"tool": {"a": {"roles": ["z"]}, "b": {"roles": ["y"]}}, "model": {"m": {"roles": ["x"]}}}
    assert catalog["tool"]["a"] == {"roles": ["x"]}  # the base is untouched
    assert merged["model"] is catalog["model"]  # untouched subtrees are shared, not copied
    assert merged["tool"] is not catalog["tool"]
