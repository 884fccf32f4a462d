"""The AuthZEN Authorization API 1.0 on the HTTP listener: evaluation, evaluations with their three
semantics, the configuration document, strict request shapes, the bearer token, and the same staged
runner as the gateway (the PII hook sees the arguments)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgov.cli.stack import LocalStack
from agentgov.engine.config import build_governor, load_config
from agentgov.engine.server.authzen import authzen_routes
from agentgov.engine.server.http_authz import AuthzHandler, Request
from tests.conftest import POLICIES
from tests.http_helpers import request

TOKEN = "authzen-test-token-not-a-secret"  # a marked test credential
ALICE = {"type": "user", "id": "alice", "properties": {"roles": ["analyst"], "tenant": "acme"}}
DEV = {"type": "user", "id": "dev1", "properties": {"roles": ["developer"], "tenant": "acme"}}
CRM = {"type": "tool", "id": "crm.query"}
CALL = {"name": "tool.call", "properties": {"arguments": {"tenant_id": "acme", "query": "open deals"}}}


def _handler(tmp_path: Path, token: str | None = None) -> AuthzHandler:
    path = tmp_path / "agentgov.yaml"
    path.write_text(yaml.safe_dump({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False}}))
    governor = build_governor(load_config(path))
    handler = AuthzHandler(governor)
    handler.routes.update(authzen_routes(governor, token=token, base_url="http://pdp.example"))
    return handler


def _ask(handler: AuthzHandler, path: str, body: Any = None, *, method: str = "POST", raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
    response = asyncio.run(handler(Request(method, path, dict(headers or {}), data)))
    return response.status, json.loads(response.body), dict(response.headers)


def test_an_evaluation_is_decided_by_the_policy(tmp_path: Path) -> None:
    handler = _handler(tmp_path)
    status, doc, headers = _ask(handler, "/access/v1/evaluation", {"subject": ALICE, "action": CALL, "resource": CRM},
                                headers={"x-request-id": "req-1"})
    assert (status, doc["decision"], doc["context"]["reasons"]) == (200, True, ["tool_granted"])
    assert headers["x-request-id"] == "req-1"
    assert len(doc["context"]["decision_id"]) == 32
    assert doc["context"]["policy_revision"].startswith("sha256:")
    status, doc, _ = _ask(handler, "/access/v1/evaluation", {"subject": DEV, "action": CALL, "resource": CRM})
    assert (status, doc["decision"], doc["context"]["status"]) == (200, False, 403)
    other_tenant = {"name": "tool.call", "properties": {"arguments": {"tenant_id": "globex"}}}
    assert _ask(handler, "/access/v1/evaluation",
                {"subject": ALICE, "action": other_tenant, "resource": CRM})[1]["context"]["reasons"] == \
        ["tenant_mismatch"]


def test_the_hooks_run_a_secret_in_the_arguments_is_refused(tmp_path: Path) -> None:
    leaky = {"name": "tool.call", "properties": {"arguments": {"tenant_id": "acme",
                                                               "query": "key AKIAIOSFODNN7EXAMPLF please"}}}
    _, doc, _ = _ask(_handler(tmp_path), "/access/v1/evaluation", {"subject": ALICE, "action": leaky, "resource": CRM})
    assert (doc["decision"], doc["context"]["reasons"]) == (False, ["secret_detected"])


@pytest.mark.parametrize(("semantic", "answers"), [
    ("execute_all", [True, False, True]),
    ("deny_on_first_deny", [True, False]),
    ("permit_on_first_permit", [True]),
])
def test_evaluations_with_defaults_and_each_semantic(tmp_path: Path, semantic: str, answers: list[bool]) -> None:
    body = {"subject": ALICE, "action": CALL, "options": {"evaluations_semantic": semantic},
            "evaluations": [{"resource": CRM}, {"resource": CRM, "subject": DEV}, {"resource": CRM}]}
    status, doc, _ = _ask(_handler(tmp_path), "/access/v1/evaluations", body)
    assert status == 200
    assert [e["decision"] for e in doc["evaluations"]] == answers


def test_the_configuration_document(tmp_path: Path) -> None:
    status, doc, _ = _ask(_handler(tmp_path), "/.well-known/authzen-configuration", method="GET")
    assert (status, doc["access_evaluation_endpoint"]) == (200, "http://pdp.example/access/v1/evaluation")
    assert doc["access_evaluations_endpoint"] == "http://pdp.example/access/v1/evaluations"


@pytest.mark.parametrize(("path", "body", "raw", "message"), [
    ("/access/v1/evaluation", {"action": CALL, "resource": CRM}, None, "`subject` is required"),
    ("/access/v1/evaluation", {"subject": ALICE, "action": CALL, "resource": CRM, "extra": 1}, None, "unknown key"),
    ("/access/v1/evaluation", {"subject": {"type": "user"}, "action": CALL, "resource": CRM}, None,
     "`subject.id` must be a non-empty string"),
    ("/access/v1/evaluation", {"subject": ALICE, "action": {"name": "fly"}, "resource": CRM}, None, "fly"),
    ("/access/v1/evaluation", {"subject": {**ALICE, "properties": {"roles": "admin"}}, "action": CALL,
                               "resource": CRM}, None, "roles` must be a list"),
    ("/access/v1/evaluation", None, b'{"subject": {}, "subject": {}}', "repeats a key"),
    ("/access/v1/evaluation", None, b"not json", "not valid JSON"),
    ("/access/v1/evaluations", {"subject": ALICE, "action": CALL, "evaluations": [{"resource": CRM}, 3]}, None,
     "every item"),
    ("/access/v1/evaluations", {"subject": ALICE, "action": CALL, "evaluations": [{"resource": CRM}] * 257}, None,
     "at most 256"),
    ("/access/v1/evaluations", {"evaluations": [{"resource": CRM}], "options": {"evaluations_semantic": "any"}},
     None, "evaluations_semantic"),
])
def test_bad_requests_are_400_with_what_was_wrong(tmp_path: Path, path: str, body: Any, raw: bytes | None,
                                                 message: str) -> None:
    status, doc, _ = _ask(_handler(tmp_path), path, body, raw=raw)
    assert status == 400
    assert message in doc["detail"]


def test_a_batch_is_checked_whole_before_anything_is_decided(tmp_path: Path) -> None:
    handler = _handler(tmp_path)
    body = {"subject": ALICE, "action": CALL, "evaluations": [{"resource": CRM}, {"resource": {"type": "tool"}}]}
    assert _ask(handler, "/access/v1/evaluations", body)[0] == 400


def test_methods_and_the_bearer_token(tmp_path: Path) -> None:
    handler = _handler(tmp_path, token=TOKEN)
    body = {"subject": ALICE, "action": CALL, "resource": CRM}
    assert _ask(handler, "/access/v1/evaluation", method="GET")[0] == 405
    assert _ask(handler, "/access/v1/evaluation", body)[0] == 401
    assert _ask(handler, "/access/v1/evaluation", body, headers={"authorization": "Bearer wrong"})[0] == 401
    assert _ask(handler, "/access/v1/evaluation", body, headers={"authorization": f"Bearer {TOKEN}"})[0] == 200
    assert _ask(handler, "/access/v1/other", body)[0] == 404


@pytest.mark.envoy
def test_serve_answers_authzen_on_its_http_port() -> None:
    with LocalStack(policies=POLICIES) as stack:
        url = f"http://127.0.0.1:{stack.agentgov_http_ports[0]}/access/v1/evaluation"
        status, _, body = request(url, "POST", {"subject": ALICE, "action": CALL, "resource": CRM})
        assert status == 200
        assert json.loads(body)["decision"] is True


def test_a_request_id_that_cannot_be_written_back_is_not_echoed(tmp_path: Path) -> None:
    body = {"subject": ALICE, "action": CALL, "resource": CRM}
    status, _, headers = _ask(_handler(tmp_path), "/access/v1/evaluation", body, headers={"x-request-id": "a\x7fb"})
    assert status == 200
    assert "x-request-id" not in headers
