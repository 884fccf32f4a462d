"""One policy, three doors: Envoy ext_authz, the agentgov.v1 decision service and OPA's Data API
must decide identically; and an ext_authz server can delegate to a remote decision service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentgov.cli.stack import LocalStack
from agentgov.engine.hooks.audit.verify import log_files, read_records
from agentgov.engine.proto import decision_pb2 as pb
from tests.conftest import POLICIES
from tests.http_helpers import CALL, batch_decide, bearer, decide, post, send

pytestmark = pytest.mark.envoy

CHAT = {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
AWS_KEY = "AKIAQ7RZ3KXW5MN2PL4T"  # TEST VALUE, shaped like an access key id


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # With the audit log on: it is how a test sees which worker decided (one chain per worker).
    s = LocalStack(policies=POLICIES, workers=2, data_api=True, config_extra={"audit": {"dir": "audit"}})
    with s:
        yield s


def cases(stack: LocalStack) -> list[tuple[str, str, dict[str, Any], str | None]]:
    alice = stack.keys.token("alice", ["analyst"], "acme")
    dev = stack.keys.token("dev1", ["developer"], "acme")
    support = stack.keys.token("sam", ["support"], "acme")
    other_tenant = {**CALL, "params": {"name": "crm.query", "arguments": {"tenant_id": "globex"}}}
    return [
        ("allowed tool call", "/mcp", CALL, alice),
        ("forbidden tool", "/mcp", CALL, dev),
        ("tenant mismatch", "/mcp", other_tenant, alice),
        ("allowed model", "/v1/chat/completions", CHAT, alice),
        ("forbidden model", "/v1/chat/completions", CHAT, support),
        ("max_tokens over the cap", "/v1/chat/completions", {**CHAT, "max_tokens": 10**6}, alice),
        ("tools/list", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, dev),
        ("secret in a tool argument", "/mcp",
         {**CALL, "params": {"name": "crm.query", "arguments": {"tenant_id": "acme", "note": AWS_KEY}}}, alice),
    ]


def test_ext_authz_decision_service_and_data_api_agree(stack: LocalStack) -> None:
    target = f"127.0.0.1:{stack.agentgov_ports[1]}"
    outcomes = set()
    for title, path, body, token in cases(stack):
        headers = {"content-type": "application/json", **(bearer(token) if token else {})}
        # 1. Through Envoy (ext_authz).
        status, _, answer = send(stack, path, body, headers)
        envoy_reasons = answer["reasons"] if status != 200 else None
        # 2. The gRPC decision service, given the same HTTP request.
        response = decide(target, pb.DecideRequest(include_input=True, http=pb.HttpRequest(
            method="POST", path=path, host="127.0.0.1", headers=headers, body=json.dumps(body).encode())))
        assert (response.status, response.allow) == (status, status == 200), title
        if envoy_reasons is not None:
            assert list(response.reasons) == envoy_reasons, title
        assert len(response.decision_id) == 32
        # 3. OPA's Data API, given the policy input the decision service evaluated.
        policy_input = json.loads(response.inputs_json[-1])
        data_status, _, data = post(f"http://127.0.0.1:{stack.data_api_port}/v1/data/agentgov/decision",
                                    {"input": policy_input})
        assert data_status == 200, title
        result = data["result"]
        assert (result["allow"], result["status"]) == (response.allow, response.status), title
        assert result["reasons"] == list(response.reasons), title
        outcomes.add(status)
    assert outcomes == {200, 403}  # the cases exercise both answers


def test_action_request_decides_like_the_http_request(stack: LocalStack) -> None:
    target = f"127.0.0.1:{stack.agentgov_ports[0]}"
    alice, dev = stack.keys.token("alice", ["analyst"], "acme"), stack.keys.token("dev1", ["developer"], "acme")
    args = json.dumps(CALL["params"]["arguments"])  # type: ignore[index]
    ok = decide(target, pb.DecideRequest(action=pb.ActionRequest(
        credential=alice, kind="tool.call", name="crm.query", server="127.0.0.1", arguments_json=args,
        context={"agent": "report-bot"}), include_input=True))
    assert (ok.allow, ok.status, ok.subject.id, list(ok.subject.roles)) == (True, 200, "alice", ["analyst"])
    assert json.loads(ok.inputs_json[0])["context"]["agent"] == "report-bot"
    denied = decide(target, pb.DecideRequest(action=pb.ActionRequest(
        credential=dev, kind="tool.call", name="crm.query", arguments_json=args)))
    assert (denied.allow, denied.status, list(denied.reasons)) == (False, 403, ["default_deny"])
    unauthenticated = decide(target, pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name="crm.query")))
    assert (unauthenticated.allow, unauthenticated.status, list(unauthenticated.reasons)) == (
        False, 401, ["missing_credentials"])


def test_batch_decide_answers_in_order(stack: LocalStack) -> None:
    alice, dev = stack.keys.token("alice", ["analyst"], "acme"), stack.keys.token("dev1", ["developer"], "acme")
    args = json.dumps({"tenant_id": "acme"})
    requests = [pb.DecideRequest(action=pb.ActionRequest(credential=c, kind="tool.call", name="crm.query",
                                                         arguments_json=args)) for c in (alice, dev, alice)]
    answer = batch_decide(f"127.0.0.1:{stack.agentgov_ports[0]}", pb.BatchDecideRequest(requests=requests))
    assert [r.allow for r in answer.responses] == [True, False, True]
    assert len({r.decision_id for r in answer.responses}) == 3
    bad = pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name=""))
    with pytest.raises(grpc.RpcError) as err:
        batch_decide(f"127.0.0.1:{stack.agentgov_ports[0]}", pb.BatchDecideRequest(requests=[*requests[:1], bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("requests[1]: ")
    too_many = pb.BatchDecideRequest(requests=requests[:1] * 257)
    with pytest.raises(grpc.RpcError) as err:
        batch_decide(f"127.0.0.1:{stack.agentgov_ports[0]}", too_many)
    assert "at most 256" in (err.value.details() or "")


@pytest.mark.parametrize(("request_", "message"), [
    (pb.DecideRequest(), "must carry"),
    (pb.DecideRequest(action=pb.ActionRequest(kind="tool.run", name="x")), "action.kind"),
    (pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name="x", arguments_json="[1]")), "JSON object"),
    (pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name="x", arguments_json="{")), "not valid JSON"),
    (pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name="x", arguments_json='{"a": 1, "a": 2}')),
     "repeats a key"),
    (pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name="crm.query", resource_id="crm.export")),
     "action.resource_id (crm.export) must name the same tool as action.name"),
    (pb.DecideRequest(http=pb.HttpRequest(method="POST", envoy_attributes_json='{"metadataContext": []}')),
     "filterMetadata"),
    (pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name="")), "name is required"),
    (pb.DecideRequest(action=pb.ActionRequest(kind="tool.call", name="x", context={"color": "red"})), "context"),
    (pb.DecideRequest(http=pb.HttpRequest(method="POST", envoy_attributes_json="nope")), "envoy_attributes_json"),
])
def test_undecidable_requests_are_invalid_argument(stack: LocalStack, request_: pb.DecideRequest,
                                                   message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        decide(f"127.0.0.1:{stack.agentgov_ports[0]}", request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


def test_data_api_errors_are_opa_shaped(stack: LocalStack) -> None:
    url = f"http://127.0.0.1:{stack.data_api_port}/v1/data/agentgov/decision"
    status, _, body = post(url, None, raw=b"{not json")
    assert (status, body["code"]) == (400, "invalid_parameter")
    status, _, body = post(url, {"input": {"subject": "not an object"}})
    assert (status, body["code"]) == (400, "invalid_parameter")
    # A path that is not the decision is undefined: 200 with no result, as OPA answers.
    assert post(f"http://127.0.0.1:{stack.data_api_port}/v1/data/agentgov/catalog", {"input": {}})[2] == {}


def test_both_workers_receive_traffic(stack: LocalStack) -> None:
    token = stack.keys.token("alice", ["analyst"], "acme")
    for _ in range(20):
        assert send(stack, "/mcp", CALL, bearer(token))[0] == 200
    chains = log_files([stack.workdir / "audit"])
    served = {chain[-2:]: sum(1 for _ in read_records(files)) for chain, files in chains.items()}
    assert set(served) == {"w0", "w1"}, served
    assert all(n > 0 for n in served.values()), served


def test_ext_authz_delegates_to_a_remote_decision_service(stack: LocalStack, tmp_path: Path) -> None:
    """An enforcement-only agentgov in front of a decision-service agentgov. The edge's policy path
    does not exist, so every answer it gives must have come from the remote."""
    # gRPC between Envoy and the edge: over HTTP, Envoy answers a 5xx itself, without agentgov's body.
    edge = LocalStack(policies=tmp_path / "no-policies-here", decision_service="set below", keys=stack.keys,
                      transport="grpc")
    decider = LocalStack(policies=POLICIES, keys=stack.keys)
    try:
        decider.start_agentgov()
        edge.decision_service = f"127.0.0.1:{decider.agentgov_ports[0]}"
        edge.start()
        alice, dev = stack.keys.token("alice", ["analyst"], "acme"), stack.keys.token("dev1", ["developer"], "acme")
        status, headers, _ = send(edge, "/mcp", CALL, {**bearer(alice), "x-agentgov-subject": "mallory"})
        assert status == 200
        seen = json.loads(headers["x-demo-seen"])
        assert (seen["x-agentgov-subject"], seen["x-agentgov-roles"]) == ("alice", "analyst")
        status, _, body = send(edge, "/mcp", CALL, bearer(dev))
        assert (status, body["reasons"]) == (403, ["default_deny"])
        status, headers, body = send(edge, "/mcp", CALL, bearer("not-a-jwt"))
        assert (status, body["reasons"]) == (401, ["invalid_token"])
        assert "www-authenticate" in headers
        decider.stop_process("agentgov")
        status, headers, body = send(edge, "/mcp", CALL, bearer(alice))
        assert (status, body["reasons"]) == (503, ["decision_service_unavailable"])
        assert "x-demo-seen" not in headers
    finally:
        edge.stop()
        decider.stop()


def test_every_door_runs_the_pii_hook(stack: LocalStack) -> None:
    """No entry point skips a stage: the PII hook finds the secret whichever way the action arrives."""
    target = f"127.0.0.1:{stack.agentgov_ports[0]}"
    alice = stack.keys.token("alice", ["analyst"], "acme")
    arguments = {"tenant_id": "acme", "note": f"rotate {AWS_KEY}"}
    # The decision service, with an action the caller describes.
    described = decide(target, pb.DecideRequest(include_input=True, action=pb.ActionRequest(
        credential=alice, kind="tool.call", name="crm.query", arguments_json=json.dumps(arguments))))
    assert (described.allow, list(described.reasons)) == (False, ["secret_detected"])
    findings = json.loads(described.inputs_json[0])["pii"]["findings"]
    assert findings == [{"type": "AWS_KEY", "count": 1, "path": "arguments.note", "category": "secret"}]
    # OPA's Data API, with a stated input that carries no findings: agentgov scans the arguments itself.
    stated = {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
              "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"},
              "arguments": arguments}
    status, _, data = post(f"http://127.0.0.1:{stack.data_api_port}/v1/data/agentgov/decision", {"input": stated})
    assert status == 200
    assert (data["result"]["allow"], data["result"]["reasons"]) == (False, ["secret_detected"])
    assert AWS_KEY not in json.dumps(data)


def test_a_redaction_obligation_without_ext_proc_is_refused(stack: LocalStack) -> None:
    """This stack runs no ext_proc: nobody could carry out `redact`, so the allow becomes a deny."""
    chat = {**CHAT, "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mail ann.lee@example.org"}]}
    status, headers, body = send(stack, "/v1/chat/completions", chat,
                                 bearer(stack.keys.token("alice", ["analyst"], "acme")))
    assert (status, body["reasons"]) == (403, ["redaction_unavailable"])
    assert "x-demo-seen" not in headers
