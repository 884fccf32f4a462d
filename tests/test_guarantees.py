"""Guarantees that hold whatever policy a user writes: with a policy that allows everything, an
exhausted budget is still a 429, a secret is still a 403 secret_detected and a missing token is
still a 401, through the real Envoy, on Rego and on Cedar; each opt-out hands the decision back to
the policy."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from agentgov.cli.stack import LocalStack
from tests.http_helpers import CALL, bearer, send
from tests.support import policy_folder

ALLOW_ALL_REGO = """package agentgov

import rego.v1

# A user's own policy: everything an authenticated caller asks is allowed.
decision := {"allow": true, "reasons": ["allow_all"]} if input.subject.authenticated
default decision := {"allow": false, "reasons": ["unauthenticated"], "status": 401}
"""
ALLOW_ALL_CEDAR = """@id("allow_all")
permit (principal, action, resource);
"""
# A realistic-looking AWS access key id and secret (not the documented example key).
LEAKED = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
          "params": {"name": "notes.write", "arguments": {"text": "use AKIAZ7XQ4NRP2KD6LW3M with "
                                                                  "aws_secret_access_key=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"}}}


def _policies(base: Path, engine: str) -> Path:
    return policy_folder(base, "custom", engine, ALLOW_ALL_REGO, ALLOW_ALL_CEDAR)


def _stack(tmp_path: Path, engine: str, *, budgets: dict[str, Any] | None = None,
           pii: dict[str, Any] | None = None) -> LocalStack:
    extra: dict[str, Any] = {"budgets": {"store": "sqlite", "limits": [
        {"name": "per_subject", "key": "subject", "window": "1h", "requests": 3}], **(budgets or {})}}
    if pii is not None:
        extra["pii"] = pii
    return LocalStack(policies=_policies(tmp_path, engine), engine=engine, config_extra=extra)


@pytest.fixture(params=["rego", "cedar"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stack(tmp_path: Path, engine: str) -> Iterator[LocalStack]:
    with _stack(tmp_path, engine) as s:
        yield s


@pytest.mark.envoy
def test_a_custom_allow_all_policy_still_gets_429_past_the_cap(stack: LocalStack) -> None:
    token = bearer(stack.keys.token("intern1", ["intern"], "acme"))
    answers = [send(stack, "/mcp", CALL, token) for _ in range(5)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    _, headers, body = answers[3]
    assert body["reasons"] == ["budget_exhausted"]
    assert body["decision_id"]
    assert int(headers["retry-after"]) > 0
    assert headers["ratelimit-remaining"] == "0"


@pytest.mark.envoy
def test_a_custom_allow_all_policy_still_refuses_a_secret(stack: LocalStack) -> None:
    status, _, body = send(stack, "/mcp", LEAKED, bearer(stack.keys.token("intern1", ["intern"], "acme")))
    assert status == 403
    assert body["reasons"] == ["secret_detected"]
    assert "AKIA" not in str(body)  # the answer names the kind of credential, never its value


@pytest.mark.envoy
def test_a_custom_allow_all_policy_still_needs_a_token(stack: LocalStack) -> None:
    status, headers, body = send(stack, "/mcp", CALL, {})
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert body["error"] == "unauthenticated"


@pytest.mark.envoy
def test_opting_out_hands_budgets_and_secrets_to_the_policy(tmp_path: Path, engine: str) -> None:
    with _stack(tmp_path, engine, budgets={"enforce": "policy"}, pii={"secrets": "policy"}) as stack:
        token = bearer(stack.keys.token("intern1", ["intern"], "acme"))
        statuses = [send(stack, "/mcp", CALL, token)[0] for _ in range(5)]
        assert statuses == [200] * 5  # the allow-all policy never reads input.budget: its choice now
        status, _, _ = send(stack, "/mcp", LEAKED, token)
        assert status == 200  # a secret too: both are the policy's to refuse now, and this one allows all
    with _stack(tmp_path / "again", engine, budgets={"enforce": "policy"}) as stack:
        token = bearer(stack.keys.token("intern2", ["intern"], "acme"))
        status, _, body = send(stack, "/mcp", LEAKED, token)
        assert status == 403
        assert body["reasons"] == ["secret_detected"]  # secrets are still the hook's to refuse


@pytest.mark.envoy
def test_a_policy_deny_keeps_its_own_answer_over_a_guarantee(tmp_path: Path) -> None:
    """The policy is asked first: a forbidden call by an exhausted caller stays a 403 with the
    policy's reasons (the guarantee only replaces an allow)."""
    folder = tmp_path / "deny-notes"
    folder.mkdir()
    (folder / "policy.rego").write_text(ALLOW_ALL_REGO.replace(
        'if input.subject.authenticated',
        'if {\n\tinput.subject.authenticated\n\tinput.resource.id != "notes.write"\n}') +
        'decision := {"allow": false, "reasons": ["notes_forbidden"], "status": 403} '
        'if input.resource.id == "notes.write"\n')
    extra = {"budgets": {"store": "sqlite", "limits": [
        {"name": "per_subject", "key": "subject", "window": "1h", "requests": 1}]}}
    with LocalStack(policies=folder, config_extra=extra) as stack:
        token = bearer(stack.keys.token("intern1", ["intern"], "acme"))
        assert send(stack, "/mcp", CALL, token)[0] == 200
        status, _, body = send(stack, "/mcp", LEAKED, token)
        assert status == 403
        assert body["reasons"] == ["notes_forbidden"]


def test_check_and_serve_say_when_the_policy_never_reads_a_hooks_result(tmp_path: Path,
                                                                        run_cli: Callable[..., Result]) -> None:
    folder = _policies(tmp_path, "rego")
    config = tmp_path / "agentgov.yaml"
    config.write_text(yaml.safe_dump({"policy": {"paths": [str(folder)]}, "identity": {"required": False},
                                      "budgets": {"enforce": "policy", "limits": [
                                          {"name": "l", "key": "subject", "window": "1h", "requests": 3}]}}))
    result = run_cli("check", str(folder), "--config", str(config))
    assert result.exit_code == 0
    assert "warning: budgets.enforce is policy, but the policy never reads input.budget" in result.output
    assert "warning: the pii hook finds PII, but the policy never reads input.pii" in result.output
    assert "secrets are still refused by the pii hook" in result.output
    # With the hooks enforcing (the default) only the PII warning is left; a policy on the library
    # that reads them gets none.
    config.write_text(yaml.safe_dump({"policy": {"paths": [str(folder)]}, "identity": {"required": False},
                                      "budgets": {"limits": [{"name": "l", "key": "subject", "window": "1h",
                                                              "requests": 3}]}}))
    result = run_cli("check", str(folder), "--config", str(config))
    assert "budgets.enforce" not in result.output
    assert run_cli("init", str(tmp_path / "mine")).exit_code == 0
    result = run_cli("check", str(tmp_path / "mine"), "--config", str(config))
    assert "warning" not in result.output  # the starter reads lib.denials: secrets and budgets
    # serve says the same, once, before any worker starts (here it then stops on a port in use: exit 1).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "serve", "--config", str(config),
                               "--port", str(taken.getsockname()[1]), "--http-port", "0"],
                              capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("warning: the pii hook finds PII, but the policy never reads input.pii") == 1
