"""`agentgov check`, `eval` and `fmt` through the CLI, including every error path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import POLICIES

Run = Callable[..., Result]


def test_check_accepts_shipped_library(run_cli: Run) -> None:
    result = run_cli("check", str(POLICIES))
    assert result.exit_code == 0, result.output
    assert "4 Rego file(s), 1 Cedar file(s)" in result.output


@pytest.mark.parametrize(("body", "rule", "name", "line"), [
    ('x := http.send({"method": "get", "url": "http://x"})', "x", "http.send", 4),
    ('allow if {\n  io.jwt.decode_verify(input.t, {"secret": "s"})\n}', "allow", "io.jwt.decode_verify", 5),
    ('h := crypto.sha256("a")', "h", "crypto.sha256", 4),
    ("y := lib.missing(1)", "y", "lib.missing", 4),
])
def test_check_rejects_unsupported_builtins_with_rule_and_line(run_cli: Run, tmp_path: Path, body: str, rule: str,
                                                               name: str, line: int) -> None:
    (tmp_path / "p.rego").write_text(f"package agentgov\nimport rego.v1\nimport data.lib\n{body}\n")
    (tmp_path / "lib.rego").write_text("package lib\nf(x) := x\n")
    result = run_cli("check", str(tmp_path))
    assert result.exit_code == 1
    assert f"p.rego:{line}:" in result.output
    assert f"rule `{rule}`" in result.output
    assert f"`{name}`" in result.output


def test_check_resolves_user_functions_through_imports(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "lib.rego").write_text("package lib\nimport rego.v1\nf(x) := x + 1\n")
    (tmp_path / "p.rego").write_text(
        "package agentgov\nimport rego.v1\nimport data.lib\nimport data.lib as L\n"
        "a := lib.f(1)\nb := L.f(2)\nc := data.lib.f(3)\nd := g(4)\ng(x) := count([x])\n")
    result = run_cli("check", str(tmp_path))
    assert result.exit_code == 0, result.output


def test_check_json_uses_opa_error_shape(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package agentgov\nx := \n")
    result = run_cli("check", "--format", "json", str(tmp_path))
    assert result.exit_code == 1
    err = json.loads(result.output)["errors"][0]
    assert err["code"] == "rego_parse_error"
    assert err["location"] == {"file": str(tmp_path / "p.rego"), "row": 3, "col": 1}


def test_check_rejects_newer_syntax(run_cli: Run, tmp_path: Path) -> None:
    """Template strings (`$"…"`) are OPA syntax newer than the embedded engine: refused here, though
    real OPA (1.20+) would accept them; use the remote-OPA backend for such policies."""
    (tmp_path / "p.rego").write_text('package agentgov\nx := $"hi {input.a}"\n')
    result = run_cli("check", str(tmp_path))
    assert result.exit_code == 1
    assert "p.rego:2:6" in result.output


def test_check_validates_cedar_against_schema(run_cli: Run, policies_copy: Path) -> None:
    (policies_copy / "cedar" / "extra.cedar").write_text(
        '@id("typo")\npermit (principal, action == Action::"tool.call", resource)\nwhen { principal.rolez.isEmpty() };\n')
    result = run_cli("check", str(policies_copy))
    assert result.exit_code == 1
    assert "extra.cedar:1:1: cedar validation" in result.output
    assert "rolez" in result.output


def test_check_missing_path_and_empty_dir(run_cli: Run, tmp_path: Path) -> None:
    missing = run_cli("check", str(tmp_path / "nope"))
    assert missing.exit_code == 1
    assert "no such file or directory" in missing.output
    empty = run_cli("check", str(tmp_path))
    assert empty.exit_code == 1
    assert "no Rego or Cedar policies" in empty.output


def test_check_conflicting_data_files(run_cli: Run, policies_copy: Path) -> None:
    (policies_copy / "data.json").write_text('{"agentgov": {"catalog": {"tool": {"crm.query": 1}}}}')
    result = run_cli("check", str(policies_copy))
    assert result.exit_code == 1
    assert "data conflict: data.agentgov.catalog.tool.crm.query" in result.output


def test_data_files_land_at_their_folder_path(run_cli: Run, policies_copy: Path) -> None:
    """As OPA places them: a data.yaml in tool/extra/ is data.tool.extra, whatever it contains."""
    (policies_copy / "agentgov" / "catalog" / "tool").mkdir()
    (policies_copy / "agentgov" / "catalog" / "tool" / "data.yaml").write_text("web.search: {roles: [intern]}\n")
    result = run_cli("check", str(policies_copy))
    assert result.exit_code == 1
    assert "data conflict: data.agentgov.catalog.tool.web.search.roles" in result.output


def test_a_data_file_of_the_older_layout_is_an_error_not_ignored(run_cli: Run, policies_copy: Path) -> None:
    (policies_copy / "data").mkdir()
    (policies_copy / "data" / "catalog.yaml").write_text("agentgov: {catalog: {}}\n")
    result = run_cli("check", str(policies_copy))
    assert result.exit_code == 1
    assert "data files are named data.json or data.yaml" in result.output


def _write_input(tmp_path: Path, doc: dict[str, object]) -> str:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    return str(path)


CRM = {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
       "action": {"kind": "tool.call", "name": "crm.query"},
       "resource": {"type": "tool", "id": "crm.query"}, "arguments": {"tenant_id": "acme"}}


@pytest.mark.parametrize("engine", ["rego", "cedar"])
def test_eval_prints_decision_json(run_cli: Run, tmp_path: Path, engine: str) -> None:
    result = run_cli("eval", str(POLICIES), "--input", _write_input(tmp_path, CRM), "--engine", engine)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["allow"] is True
    assert doc["reasons"] == ["tool_granted"]
    assert doc["engine"] == engine


def test_eval_explain_names_rules_and_policies(run_cli: Run, tmp_path: Path) -> None:
    path = _write_input(tmp_path, {**CRM, "arguments": {"tenant_id": "globex"}})
    rego = json.loads(run_cli("eval", str(POLICIES), "-i", path, "--explain").output)
    assert 'data.agentgov.deny = ["tenant_mismatch"]' in rego["explain"]
    cedar = json.loads(run_cli("eval", str(POLICIES), "-i", path, "--engine", "cedar", "--explain").output)
    assert any(line.startswith("determining policy tenant_mismatch (") for line in cedar["explain"])


def test_eval_panic_is_a_deny_with_reason(run_cli: Run, tmp_path: Path) -> None:
    """A regorus-only behaviour: strings.count with an empty separator panics in the embedded engine
    (real OPA returns an evaluation error instead); either way it must be a deny, never an allow."""
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "p.rego").write_text(
        "package agentgov\nimport rego.v1\ndefault allow := false\n"
        "allow if strings.count(input.arguments.q, \"\") > 0\n"
        "decision := {\"allow\": allow, \"reasons\": [\"ok\"]}\n")
    path = _write_input(tmp_path, {"action": {"kind": "tool.call"}, "resource": {"type": "tool", "id": "x"},
                                   "arguments": {"q": "abc"}})
    result = run_cli("eval", str(pol), "--input", path)
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["allow"] is False
    assert doc["reasons"] == ["engine_error"]
    assert "window size must be non-zero" in doc["errors"][0]


def test_eval_error_paths(run_cli: Run, tmp_path: Path) -> None:
    bad_input = run_cli("eval", str(POLICIES), "--input", _write_input(tmp_path, {"action": {"kind": "fly"}}))
    assert bad_input.exit_code == 1
    assert "invalid policy input" in bad_input.output
    no_opa = run_cli("eval", "--input", _write_input(tmp_path, CRM), "--engine", "opa")
    assert no_opa.exit_code == 1
    assert "--opa-url" in no_opa.output
    (tmp_path / "only.rego").write_text("package agentgov\ndecision := {\"allow\": false, \"reasons\": []}\n")
    no_cedar = run_cli("eval", str(tmp_path / "only.rego"), "-i", str(tmp_path / "input.json"), "--engine", "cedar")
    assert no_cedar.exit_code == 1
    assert "no cedar policies" in no_cedar.output


def test_fmt_formats_cedar_and_leaves_rego_alone(run_cli: Run, tmp_path: Path) -> None:
    cedar = tmp_path / "p.cedar"
    cedar.write_text('permit(principal,action,resource) when {principal.x==1};')
    rego = tmp_path / "p.rego"
    rego.write_text("package x\nallow   :=   true\n")
    check = run_cli("fmt", "--check", str(tmp_path))
    assert check.exit_code == 2
    assert "no trustworthy Rego formatter" in check.output
    assert run_cli("fmt", str(tmp_path)).exit_code == 0
    assert cedar.read_text() == "permit (principal, action, resource)\nwhen { principal.x == 1 };\n"
    assert rego.read_text() == "package x\nallow   :=   true\n"
    assert run_cli("fmt", "--check", str(cedar)).exit_code == 0
    cedar.write_text("permit(")
    assert run_cli("fmt", str(cedar)).exit_code == 1


def test_errors_say_file_line_col_and_what(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    """One format everywhere: FILE:LINE:COL: message, or FILE: message when there is no position."""
    cedar = tmp_path / "cedar"
    cedar.mkdir()
    (cedar / "p.cedar").write_text("permit (principal, action, resource);\n\npermit (\n  principal,\n"
                                   "  action resource\n);\n")
    result = run_cli("check", str(cedar))
    assert result.exit_code == 1
    assert f"{cedar / 'p.cedar'}:5:10: cedar parse error: unexpected token `resource`" in result.output
    missing = run_cli("check", str(tmp_path / "nope"))
    assert f"{tmp_path / 'nope'}: no such file or directory" in missing.output
    assert ":0:0" not in missing.output
    evaluated = run_cli("eval", str(POLICIES), "-i", str(tmp_path / "absent.json"))
    assert evaluated.exit_code == 1
    assert evaluated.output.strip() == f"{tmp_path / 'absent.json'}: no such file or directory"
    cases = tmp_path / "cases"
    shutil.copytree(POLICIES / "rego", cases / "rego")
    (cases / "x.cases.yaml").write_text("cases:\n  - name: typo\n    request:\n      action: {kind: tool.call, name: x}\n"
                                        "      resource: {type: tool, id: x}\n    expect: {alow: true}\n")
    tested = run_cli("test", str(cases))
    assert tested.exit_code == 1
    assert "case 'typo': unknown expect key(s): alow (known: allow, obligations, reasons, status)" in tested.output
