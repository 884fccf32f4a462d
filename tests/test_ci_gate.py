"""The CI gate script, run as CI runs it: in a git repository with a base branch, agentgov on PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import POLICIES, REPO

GATE = REPO / "ci" / "policy-gate.sh"
_GIT = ["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose `main` holds the shipped library, checked out on a feature branch."""
    root = tmp_path / "repo"
    shutil.copytree(POLICIES, root / "policies", ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "base"], ["checkout", "-qb", "change"]):
        subprocess.run(["git", *_GIT, *args], cwd=root, check=True)
    return root


def _gate(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(GATE)], cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": path, "BASE_REF": "main", **env})


def _grant_contractors_crm(repo: Path) -> None:
    """A change the library's own tests do not cover: contractors gain crm.query."""
    catalog = repo / "policies" / "agentgov" / "catalog" / "data.yaml"
    text = catalog.read_text()
    assert "  crm.query:\n    roles: [analyst, support, admin]\n" in text
    catalog.write_text(text.replace("  crm.query:\n    roles: [analyst, support, admin]\n",
                                    "  crm.query:\n    roles: [analyst, support, admin, contractor]\n"))


def _decision_log(repo: Path) -> Path:
    """Yesterday's traffic, as OPA decision-log lines: a contractor's CRM query was refused."""
    crm = {"subject": {"id": "carol", "roles": ["contractor"], "tenant": "acme", "authenticated": True},
           "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"},
           "arguments": {"tenant_id": "acme"}}
    log = repo / "decisions.jsonl"
    log.write_text(json.dumps({"decision_id": "d-1", "path": "agentgov/decision", "input": crm}) + "\n")
    return log


def test_an_unchanged_policy_set_passes_and_is_built(repo: Path) -> None:
    result = _gate(repo, GITHUB_STEP_SUMMARY=str(repo / "summary.md"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (repo / "build" / "policy-bundle.tar.gz").is_file()
    assert "no decision changes" in (repo / "summary.md").read_text()
    assert "<testsuite" in (repo / "build" / "policy-gate" / "junit.xml").read_text()


def test_a_new_grant_fails_the_gate_until_approved(repo: Path) -> None:
    _grant_contractors_crm(repo)
    inputs = f"policies/tests {_decision_log(repo)}"
    failed = _gate(repo, INPUTS=inputs)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    report = (repo / "build" / "policy-gate" / "diff.md").read_text()
    assert "2 unapproved decision change(s)" in report  # the one logged decision, on Rego and on Cedar
    assert "decisions.jsonl:1:d-1` | deny→allow |" in report
    assert "::error file=" in failed.stdout
    assert not (repo / "build" / "policy-bundle.tar.gz").exists()

    approvals = repo / "approvals.yaml"
    approvals.write_text("approve:\n  - input: 'decisions.jsonl:1:d-1'\n    to: {allow: true}\n"
                         "    why: contractors may query the CRM (OPS-7)\n")
    passed = _gate(repo, INPUTS=inputs, APPROVALS=str(approvals))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert (repo / "build" / "policy-bundle.tar.gz").is_file()


def test_a_failing_test_fails_the_gate_with_2(repo: Path) -> None:
    cases = repo / "policies" / "tests" / "library.cases.yaml"
    cases.write_text(cases.read_text().replace("status: 401}", "status: 402}", 1))
    result = _gate(repo, BASE_REF="")
    assert result.returncode == 2
    junit = (repo / "build" / "policy-gate" / "junit.xml").read_text()
    assert 'failures="2"' in junit  # one case, on Rego and on Cedar


def test_a_signing_key_in_the_environment_signs_the_bundle(repo: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = repo / "ci.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    assert _gate(repo, SIGNING_KEY=private).returncode == 0
    verified = subprocess.run([str(Path(sys.executable).parent / "agentgov"), "verify", "build/policy-bundle.tar.gz",
                               "--verification-key", str(public)], cwd=repo, capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_action_and_the_pre_commit_hooks_name_what_exists() -> None:
    action = yaml.safe_load((REPO / ".github" / "actions" / "policy-gate" / "action.yml").read_text())
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    assert any("ci/policy-gate.sh" in step.get("run", "") for step in steps)
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"agentgov-check", "agentgov-test", "agentgov-fmt"}
    for hook in hooks:
        command = [str(Path(sys.executable).parent / "agentgov"), *hook["entry"].split()[1:], *hook["args"]]
        assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=300).returncode == 0, hook["id"]
