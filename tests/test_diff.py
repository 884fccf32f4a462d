"""`agentgov diff`: replaying inputs through two policy versions reports exactly the decisions a
change affects, gates on unapproved changes, and reads cases, policy inputs and decision logs."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from agentgov.engine.bundles.bundle import build_bundle
from tests.conftest import POLICIES, revoke_analyst_crm

CLI = Callable[..., Result]
CASES = str(POLICIES / "tests")
# Removing `analyst` from crm.query's roles changes exactly these library cases, on both engines:
AFFECTED = {
    "library.cases.yaml#analyst may query CRM in own tenant",
    "library.cases.yaml#listing a tenant-scoped tool needs no tenant argument",
    "library.cases.yaml#a tool result with an e-mail is redacted for a redact-classified tool",
}


@pytest.fixture
def head(policies_copy: Path) -> Path:
    """The library with one grant removed: analysts lose crm.query."""
    return revoke_analyst_crm(policies_copy)


def _json(result: Result) -> dict[str, object]:
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_removing_one_grant_reports_exactly_the_affected_decisions_and_exits_2(run_cli: CLI, head: Path) -> None:
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(head), "--inputs", CASES, "--format", "json")
    assert result.exit_code == 2
    report = _json(result)
    changes = report["changes"]
    assert isinstance(changes, list)
    assert {(c["input"], c["engine"]) for c in changes} == {(i, e) for i in AFFECTED for e in ("rego", "cedar")}
    assert all(c["kind"] == "allow→deny" and c["head"]["reasons"] == ["default_deny"] for c in changes)
    assert report["replayed"] > 40


def test_with_the_flip_approved_it_exits_0(run_cli: CLI, head: Path, tmp_path: Path) -> None:
    approvals = tmp_path / "approvals.yaml"
    approvals.write_text("approve:\n" + "".join(
        f"  - input: {json.dumps(i)}\n    to: {{allow: false}}\n    why: analysts lose CRM (SEC-42)\n" for i in AFFECTED))
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(head), "--inputs", CASES,
                     "--approvals", str(approvals))
    assert result.exit_code == 0, result.output
    assert "6 changed (0 unapproved, 6 approved)" in result.output
    assert "why:  analysts lose CRM (SEC-42)" in result.output


def test_an_approval_pinning_another_answer_does_not_cover_the_change(run_cli: CLI, head: Path,
                                                                      tmp_path: Path) -> None:
    approvals = tmp_path / "approvals.yaml"
    approvals.write_text("approve:\n" + "".join(
        f"  - input: {json.dumps(i)}\n    to: {{status: 429}}\n    why: wrong expectation\n" for i in AFFECTED)
        + "  - input: nothing#matches\n    why: stale\n")
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(head), "--inputs", CASES,
                     "--approvals", str(approvals))
    assert result.exit_code == 2
    assert "approval for 'nothing#matches' matched nothing" in result.output


def test_an_unchanged_policy_set_reports_nothing(run_cli: CLI, policies_copy: Path) -> None:
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(policies_copy), "--inputs", CASES)
    assert result.exit_code == 0, result.output
    assert ": 0 changed (0 unapproved, 0 approved), 1 skipped" in result.output


def test_a_bundle_and_a_git_revision_can_be_either_side(run_cli: CLI, head: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "base.tar.gz"
    bundle.write_bytes(build_bundle([POLICIES]))
    from_bundle = run_cli("diff", "--base", str(bundle), "--head", str(head), "--inputs", CASES, "--format", "json")
    assert from_bundle.exit_code == 2
    assert {c["input"] for c in _json(from_bundle)["changes"]} == AFFECTED  # type: ignore[union-attr]

    repo = tmp_path / "repo"
    shutil.copytree(POLICIES, repo / "policies")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    catalog = repo / "policies" / "agentgov" / "catalog" / "data.yaml"
    catalog.write_text((head / "agentgov" / "catalog" / "data.yaml").read_text())
    monkeypatch.chdir(repo)
    from_git = run_cli("diff", "--base", "git:HEAD", "--head", "policies", "--inputs", CASES, "--format", "json")
    assert from_git.exit_code == 2, from_git.output
    assert {c["input"] for c in _json(from_git)["changes"]} == AFFECTED  # type: ignore[union-attr]
    bad_ref = run_cli("diff", "--base", "git:no-such-ref", "--head", "policies", "--inputs", CASES)
    assert bad_ref.exit_code == 1
    assert "git:no-such-ref" in bad_ref.output
    option = run_cli("diff", "--base", "git:--output=/tmp/x", "--head", "policies", "--inputs", CASES)
    assert option.exit_code == 1
    assert "not a git revision" in option.output
    outside = run_cli("diff", "--base", f"git:HEAD:{tmp_path}", "--head", "policies", "--inputs", CASES)
    assert outside.exit_code == 1
    assert "outside this git repository" in outside.output


def test_policy_inputs_opa_decision_logs_and_audit_records_replay(run_cli: CLI, head: Path, tmp_path: Path) -> None:
    crm = {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
           "action": {"kind": "tool.call", "name": "crm.query"},
           "resource": {"type": "tool", "id": "crm.query"}, "arguments": {"tenant_id": "acme"}}
    search = {**crm, "action": {"kind": "tool.call", "name": "web.search"},
              "resource": {"type": "tool", "id": "web.search"}, "arguments": {}}
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "crm.json").write_text(json.dumps(crm))
    (tmp_path / "inputs" / "opa.jsonl").write_text(
        json.dumps({"decision_id": "d1", "path": "agentgov/decision", "input": crm, "result": {}}) + "\n\n"
        + json.dumps({"decision_id": "d2", "path": "agentgov/decision", "input": search, "result": {}}) + "\n")
    audit = {"v": 1, "decision_id": "a1", "phase": "request",
             "subject": {"id": "alice", "tenant": "acme", "roles": ["support"], "authenticated": True},
             "actions": [{"kind": "tool.call", "name": "web.search", "resource_type": "tool",
                          "resource_id": "web.search"}], "findings": [], "allow": True}
    (tmp_path / "inputs" / "audit.jsonl").write_text(json.dumps(audit) + "\n")
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(head), "--inputs", str(tmp_path / "inputs"),
                     "--format", "json")
    report = _json(result)
    assert report["replayed"] == 4
    assert {c["input"] for c in report["changes"]} == {"crm.json", "opa.jsonl:1:d1"}  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", '{"decision_id": "x", "input": {}}\nnot json\n', "bad.jsonl:2:1: invalid JSON"),
    ("other.jsonl", '{"hello": 1}\n', "neither an OPA decision log entry"),
    ("list.json", "[1, 2]", "one policy input object"),
    ("bad-input.json", '{"subject": "alice"}', "bad-input.json:1:1: invalid policy input at"),
    ("notes.txt", "hello", "inputs are case files"),
    ("plain.yaml", "a: 1\n", "must be a case file"),
])
def test_unreadable_inputs_are_load_errors_naming_the_place(run_cli: CLI, tmp_path: Path, name: str,
                                                            content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(POLICIES), "--inputs", str(path))
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.parametrize(("approvals", "message"), [
    ("approve: {}\n", "needs an `approve:` list"),
    ("approve:\n  - input: x\n", "needs `input` and a non-empty `why`"),
    ("approve:\n  - input: x\n    why: y\n    to: {colour: red}\n", "may pin allow, status"),
])
def test_a_bad_approvals_file_is_a_load_error(run_cli: CLI, tmp_path: Path, approvals: str, message: str) -> None:
    path = tmp_path / "approvals.yaml"
    path.write_text(approvals)
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(POLICIES), "--inputs", CASES,
                     "--approvals", str(path))
    assert result.exit_code == 1
    assert message in result.output


def test_missing_policies_or_no_inputs_are_load_errors(run_cli: CLI, tmp_path: Path) -> None:
    missing = run_cli("diff", "--base", str(tmp_path / "nope"), "--head", str(POLICIES), "--inputs", CASES)
    assert missing.exit_code == 1
    assert "no such file or directory" in missing.output
    (tmp_path / "empty").mkdir()
    empty = run_cli("diff", "--base", str(POLICIES), "--head", str(POLICIES), "--inputs", str(tmp_path / "empty"))
    assert empty.exit_code == 1
    assert "no inputs to replay" in empty.output


def test_pull_request_formats(run_cli: CLI, head: Path) -> None:
    args = ("diff", "--base", str(POLICIES), "--head", str(head), "--inputs", CASES, "--format")
    markdown = run_cli(*args, "markdown").output
    assert markdown.startswith("### agentgov diff: 6 unapproved decision change(s)")
    assert "| ❌ | rego | `library.cases.yaml#analyst may query CRM in own tenant` | allow→deny |" in markdown
    github = run_cli(*args, "github").output.splitlines()
    errors = [line for line in github if line.startswith("::error file=")]
    assert len(errors) == 6
    assert all(",line=" in line and "title=agentgov diff::" in line for line in errors)
    junit = ET.fromstring(run_cli(*args, "junit").output)
    assert junit.get("failures") == "6"
    assert len(junit.findall("testcase/failure")) == 6


def test_agentgovs_own_audit_folder_replays_as_docs_ci_recommends(run_cli: CLI, head: Path, tmp_path: Path) -> None:
    """The folder `audit.dir` names, as the audit hook leaves it: records with PII findings, each
    chain's signed checkpoints file and its lock. Only the records are inputs."""
    import asyncio

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agentgov.engine.hooks.audit.chain import ChainWriter

    async def record() -> None:
        writer = ChainWriter(tmp_path / "audit", "node-w0", signing_key=Ed25519PrivateKey.generate())
        writer.open()
        for decision_id, (who, role) in enumerate((("alice", "analyst"), ("sam", "support"))):
            await writer.append({
                "v": 1, "decision_id": f"d{decision_id}", "allow": True, "status": 200, "reasons": ["tool_granted"],
                "subject": {"id": who, "tenant": "acme", "roles": [role], "authenticated": True},
                "actions": [{"kind": "tool.call", "name": "crm.query", "resource_type": "tool",
                             "resource_id": "crm.query"}],
                "findings": [{"type": "EMAIL", "category": "pii", "count": 2}]})
        await writer.close()

    asyncio.run(record())
    assert (tmp_path / "audit" / "node-w0.checkpoints.jsonl").is_file()
    result = run_cli("diff", "--base", str(POLICIES), "--head", str(head), "--inputs", str(tmp_path / "audit"),
                     "--format", "json")
    assert result.exit_code in (0, 2), result.output
    assert _json(result)["replayed"] == 2
