"""A first hour without stumbles: each test is something a new user ran into."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from agentgov.cli.fmt import keep_blank_after_comments
from agentgov.cli.stack import LocalStack
from agentgov.engine.hooks.identity import IdentityVerifier, Issuer
from tests.conftest import POLICIES, REPO

Run = Callable[..., Result]


def test_a_policy_in_another_package_says_which_rule_it_looked_for(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text('package myco.authz\n\nimport rego.v1\n\ndefault decision := {"allow": false}\n')
    request = tmp_path / "in.json"
    request.write_text(json.dumps({"action": {"kind": "http"}, "resource": {"type": "route", "id": "/"}}))
    doc = json.loads(run_cli("eval", str(tmp_path / "p.rego"), "--input", str(request)).output)
    assert doc["reasons"] == ["decision_undefined"]
    assert doc["errors"] == ["no policy defines data.agentgov.decision (packages loaded: data.myco.authz); name the "
                             "decision rule with --rule, or policy.rule in agentgov.yaml"]
    ok = json.loads(run_cli("eval", str(tmp_path / "p.rego"), "--input", str(request),
                            "--rule", "data.myco.authz.decision").output)
    assert ok["reasons"] == ["default_deny"]


def test_the_readme_eval_command_runs(run_cli: Run) -> None:
    result = run_cli("eval", str(POLICIES), "--input", str(POLICIES / "examples" / "request.json"), "--engine", "cedar",
                     "--explain")
    assert json.loads(result.output)["reasons"] == ["tenant_mismatch"]
    assert "policies/examples/request.json" in (REPO / "README.md").read_text()


def test_fmt_check_passes_on_the_shipped_library(run_cli: Run) -> None:
    assert run_cli("fmt", "--check", str(POLICIES)).exit_code == 0


def test_fmt_keeps_the_blank_line_after_a_section_comment() -> None:
    original = "// header\n\n// ---- grants ----\n\n@id(\"a\")\npermit (principal, action, resource);\n"
    glued = "// header\n// ---- grants ----\n@id(\"a\")\npermit (principal, action, resource);\n"
    fixed = keep_blank_after_comments(original, glued)
    assert fixed == original
    assert keep_blank_after_comments(fixed, fixed) == fixed  # stable


def test_junit_on_a_load_error_is_a_testcase_with_the_error(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package agentgov\nx := \n")
    result = run_cli("test", str(tmp_path), "--format", "junit")
    assert result.exit_code == 1
    root = ET.fromstring(result.stdout)
    error = root.find("testsuite/testcase/error")
    assert error is not None
    assert "p.rego:3:1" in (error.text or "")
    assert root.get("errors") == "1"


def test_an_empty_jwks_is_a_start_up_error(tmp_path: Path) -> None:
    for content in ('{"keys": []}', "{}", '{"keys": [{"kty": "RSA"}]}'):
        (tmp_path / "jwks.json").write_text(content)
        with pytest.raises(ValueError, match="the JWKS has no usable keys"):
            IdentityVerifier([Issuer("https://i", ("a",), jwks_file=str(tmp_path / "jwks.json"))])


def test_serve_and_envoy_config_read_the_agentgov_yaml_here(tmp_path: Path) -> None:
    (tmp_path / "agentgov.yaml").write_text(json.dumps({
        "policy": {"paths": [str(POLICIES)]}, "identity": {"required": False},
        "server": {"port": 7310, "workers": 3, "ext_proc": True, "colour": "red"}}))
    env = {"PATH": "/usr/bin:/bin"}
    serve = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "serve"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode == 1
    assert "unknown key(s) server.colour" in serve.stderr  # it read ./agentgov.yaml
    config = json.loads((tmp_path / "agentgov.yaml").read_text())
    del config["server"]["colour"]
    (tmp_path / "agentgov.yaml").write_text(json.dumps(config))
    bootstrap = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "envoy-config"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60)
    assert bootstrap.returncode == 0, bootstrap.stderr
    assert [f"port_value: {p}" in bootstrap.stdout for p in (7310, 7311, 7312)] == [True, True, True]
    assert "envoy.filters.http.ext_proc" in bootstrap.stdout


def test_a_stack_leaves_nothing_in_tmp() -> None:
    before = set(Path(tempfile.gettempdir()).glob("agentgov-stack-*"))
    stack = LocalStack(policies=POLICIES)
    stack.write_config()
    stack.stop()
    assert set(Path(tempfile.gettempdir()).glob("agentgov-stack-*")) == before
