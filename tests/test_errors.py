"""The one error table (engine/errors.py), driven through every door.

For each failure category, a request that fails that way is sent to each door that can see it,
through the door's own public entry point (the gRPC Check, the HTTP listener's handler, the
decision service, a real Data API server on loopback, the AuthZEN routes, ext_proc's stream). Each
answer must be in the door's own protocol shape with the table's status, fail closed, carry a
decision id, and that decision id must have reached the after hooks (so it is audited).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2
from google.rpc import code_pb2

from agentgov.cli.stack import DemoKeys, free_port
from agentgov.engine.backends.base import Explanation
from agentgov.engine.config import Config, build_hooks
from agentgov.engine.errors import Failure, category_of
from agentgov.engine.hooks.base import Deny, HookRequest
from agentgov.engine.hooks.registry import HookSlot, bind
from agentgov.engine.model import Decision
from agentgov.engine.pipeline import Governor, GovernorOptions
from agentgov.engine.policy.policy_set import PolicySet, UnavailableBackend
from agentgov.engine.proto import decision_pb2 as pb
from agentgov.engine.server.authzen import authzen_routes
from agentgov.engine.server.data_api import create_app
from agentgov.engine.server.decision_service import DecisionService
from agentgov.engine.server.exchange import EXCHANGE_KEY, EXT_AUTHZ_NAMESPACE
from agentgov.engine.server.ext_authz import AuthorizationService
from agentgov.engine.server.ext_proc import ExternalProcessorService
from agentgov.engine.server.http_authz import AuthzHandler, Request
from tests.support import ExplodingBackend, verifier

CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "crm.query", "arguments": {"q": "x"}}}
STATED = {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
          "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"},
          "arguments": {"q": "x"}}


class Recorder:
    """An after hook that records every decision id it sees: what the audit hook would append."""

    name = "recorder"
    phases = frozenset({"after"})
    failure_mode = "deny"
    timeout_s = None

    def __init__(self) -> None:
        self.seen: dict[str, Decision] = {}

    async def after(self, request: HookRequest, decision: Decision) -> None:
        self.seen[request.decision_id] = decision


class Refuses:
    """A before hook that answers early with one category (as the budget hook does with a 429)."""

    phases = frozenset({"before"})
    failure_mode = "deny"
    timeout_s = None

    def __init__(self, failure: Failure | None) -> None:
        self.name = "refuses"
        self.failure = failure

    async def before(self, request: HookRequest) -> Deny:
        if self.failure is None:
            raise RuntimeError("the hook itself fails")
        return Deny.failed(self.failure, "over_budget", detail="over the cap")


class Answers:
    """A backend that answers every question with one decision (an engine error, a policy deny)."""

    name = "fixed"

    def __init__(self, decision: Decision) -> None:
        self.decision = decision

    async def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        return self.decision

    async def explain(self, policy_input: Mapping[str, Any]) -> Explanation:
        raise NotImplementedError

    async def close(self) -> None:
        return None


@dataclass
class Case:
    governor: Governor
    recorder: Recorder
    headers: dict[str, str]
    body: bytes


def _case(tmp_path: Path, failure: Failure) -> Case:
    """A governor and a request that fails with `failure` on the doors that parse requests."""
    keys = DemoKeys()
    recorder = Recorder()
    hooks: list[HookSlot] = [bind(recorder)]
    backend: Any = Answers(Decision(allow=True, reasons=("ok",), status=200))
    headers = {"authorization": f"Bearer {keys.token('alice', ['analyst'], 'acme')}",
               "content-type": "application/json"}
    body = json.dumps(CALL).encode()
    if failure is Failure.MALFORMED:
        body = b'{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"tools/list"}'  # a repeated key: two readings
    elif failure is Failure.UNSUPPORTED_MEDIA:
        headers["content-type"] = "application/json; charset=latin-1"
    elif failure is Failure.UNAUTHENTICATED:
        del headers["authorization"]
    elif failure is Failure.FORBIDDEN:
        backend = Answers(Decision.failed(Failure.FORBIDDEN, "not_granted"))
    elif failure is Failure.OVER_BUDGET:
        hooks.insert(0, bind(Refuses(Failure.OVER_BUDGET)))
    elif failure is Failure.HOOK_ERROR:
        hooks.insert(0, bind(Refuses(None)))
    elif failure is Failure.ENGINE_ERROR:
        backend = Answers(Decision.failed(Failure.ENGINE_ERROR, "engine_error", error="the engine panicked"))
    elif failure is Failure.UNAVAILABLE:
        backend = PolicySet(UnavailableBackend("no bundle loaded yet"), source="test")
    elif failure is Failure.INTERNAL:
        backend = ExplodingBackend()
    governor = Governor(backend, verifier(tmp_path, keys), GovernorOptions(mcp_paths=("/mcp",)), hooks=hooks)
    return Case(governor, recorder, headers, body)


# The categories every door that reads a whole request can produce.
REQUEST_CATEGORIES = [Failure.MALFORMED, Failure.UNSUPPORTED_MEDIA, Failure.UNAUTHENTICATED, Failure.FORBIDDEN,
                      Failure.OVER_BUDGET, Failure.HOOK_ERROR, Failure.ENGINE_ERROR, Failure.UNAVAILABLE,
                      Failure.INTERNAL]


def test_every_category_has_a_row_and_a_status_in_its_class() -> None:
    assert len({f.answer.category for f in Failure}) == len(Failure) == 11  # no row is an alias of another
    for failure in Failure:
        answer = failure.answer
        assert answer.error
        assert answer.outcome in ("deny", "error", "late")
        assert (answer.status >= 500) == (answer.outcome != "deny"), failure
        assert category_of(answer.status).status == answer.status
    assert category_of(418) is Failure.FORBIDDEN
    assert category_of(599) is Failure.UNAVAILABLE


def _audited(case: Case, decision_id: str, status: int) -> None:
    assert decision_id, "every answer carries a decision id"
    assert decision_id in case.recorder.seen, "every answer passes the after hooks (audit)"
    assert case.recorder.seen[decision_id].status == status
    assert not case.recorder.seen[decision_id].allow


@pytest.mark.parametrize("failure", REQUEST_CATEGORIES, ids=lambda f: f.name.lower())
def test_grpc_ext_authz(tmp_path: Path, failure: Failure) -> None:
    case = _case(tmp_path, failure)
    request = authz.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.raw_body = "POST", "/mcp", "demo", case.body
    http.headers.update(case.headers)
    response = asyncio.run(AuthorizationService(case.governor).Check(request, None))  # type: ignore[arg-type]
    denied = response.denied_response
    assert denied.status.code == failure.status
    assert response.status.code == code_pb2.Code.Value(failure.answer.grpc_check)
    body = json.loads(denied.body)
    assert body["error"] == failure.answer.error
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert headers["x-agentgov-decision-id"] == body["decision_id"]
    _audited(case, body["decision_id"], failure.status)


@pytest.mark.parametrize("failure", REQUEST_CATEGORIES, ids=lambda f: f.name.lower())
def test_http_ext_authz(tmp_path: Path, failure: Failure) -> None:
    case = _case(tmp_path, failure)
    response = asyncio.run(AuthzHandler(case.governor)(Request("POST", "/ext_authz/mcp",
                                                               {**case.headers, "host": "demo"}, case.body)))
    assert response.status == failure.status
    body = json.loads(response.body)
    assert body["error"] == failure.answer.error
    assert dict(response.headers)["x-agentgov-decision-id"] == body["decision_id"]
    _audited(case, body["decision_id"], failure.status)


@pytest.mark.parametrize("failure", REQUEST_CATEGORIES, ids=lambda f: f.name.lower())
def test_decision_service(tmp_path: Path, failure: Failure) -> None:
    case = _case(tmp_path, failure)
    request = pb.DecideRequest(http=pb.HttpRequest(method="POST", path="/mcp", host="demo", headers=case.headers,
                                                   body=case.body))
    response = asyncio.run(DecisionService(case.governor).Decide(request, None))  # type: ignore[arg-type]
    assert not response.allow
    assert response.status == failure.status
    _audited(case, response.decision_id, failure.status)


class _Context:
    """What DecisionService needs of a gRPC context to refuse a request: abort."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise grpc.RpcError(details)


def test_decision_service_refuses_an_empty_request_with_the_tables_code(tmp_path: Path) -> None:
    case = _case(tmp_path, Failure.FORBIDDEN)
    context = _Context()
    with pytest.raises(grpc.RpcError):
        asyncio.run(DecisionService(case.governor).Decide(pb.DecideRequest(), context))  # type: ignore[arg-type]
    assert context.code is grpc.StatusCode[Failure.MALFORMED.answer.grpc_door]
    decision_id = context.details.rsplit("decision ", 1)[1].rstrip(")")
    _audited(case, decision_id, Failure.MALFORMED.status)


# --- the doors that are told the subject: the Data API and AuthZEN -------------------------------

# A stated input skips identity and parsing by design (docs/architecture.md); the categories these
# doors can meet are their own request failures and every decision-stage failure.
STATED_CATEGORIES = [Failure.FORBIDDEN, Failure.OVER_BUDGET, Failure.HOOK_ERROR, Failure.ENGINE_ERROR,
                     Failure.UNAVAILABLE, Failure.INTERNAL]


async def _data_api(case: Case, body: bytes, headers: Mapping[str, str] | None = None,
                    token: str | None = None) -> tuple[int, dict[str, Any]]:
    port = free_port()
    runner = aiohttp.web.AppRunner(create_app(case.governor, "data.agentgov.decision", token=token))
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/v1/data/agentgov/decision", data=body, headers=dict(headers or {})) as r:
            return r.status, await r.json()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("failure", STATED_CATEGORIES, ids=lambda f: f.name.lower())
def test_data_api_decisions(tmp_path: Path, failure: Failure) -> None:
    case = _case(tmp_path, failure)
    status, doc = asyncio.run(_data_api(case, json.dumps({"input": STATED}).encode()))
    assert status == 200  # OPA answers a decision with its result, whatever it says
    assert doc["result"]["allow"] is False
    assert doc["result"]["status"] == failure.status


def _door_breaks(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The door itself fails (not a stage of the decision): the last line of defence answers."""
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the door broke")

    monkeypatch.setattr(case.governor, "decide_stated", broken)


def test_data_api_door_failure_is_opas_error_shape_with_a_decision_id(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    case = _case(tmp_path, Failure.FORBIDDEN)
    _door_breaks(case, monkeypatch)
    status, doc = asyncio.run(_data_api(case, json.dumps({"input": STATED}).encode()))
    assert status == Failure.INTERNAL.answer.door_status
    assert doc["code"] == "internal_error"
    assert "the door broke" not in json.dumps(doc)
    _audited(case, doc["decision_id"], Failure.INTERNAL.status)


def test_authzen_door_failure_is_a_refusal_with_a_decision_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = _case(tmp_path, Failure.FORBIDDEN)
    _door_breaks(case, monkeypatch)
    status, doc = _authzen(case, json.dumps(AUTHZEN_REQUEST).encode())
    assert status == Failure.INTERNAL.answer.door_status
    assert doc["decision"] is False
    assert "the door broke" not in json.dumps(doc)
    _audited(case, doc["decision_id"], Failure.INTERNAL.status)


@pytest.mark.parametrize(("failure", "body", "token"), [
    (Failure.MALFORMED, b'{"input": 1, "input": 2}', None),
    (Failure.UNAUTHENTICATED, b'{"input": {}}', "a-token-of-sixteen-chars"),
], ids=["malformed", "unauthenticated"])
def test_data_api_request_failures(tmp_path: Path, failure: Failure, body: bytes, token: str | None) -> None:
    case = _case(tmp_path, Failure.FORBIDDEN)
    status, doc = asyncio.run(_data_api(case, body, token=token))
    assert status == failure.answer.door_status
    assert doc["code"] in ("invalid_parameter", "unauthorized")
    _audited(case, doc["decision_id"], failure.status)


def _authzen(case: Case, body: bytes, headers: Mapping[str, str] | None = None,
             token: str | None = None) -> tuple[int, dict[str, Any]]:
    route = authzen_routes(case.governor, token=token)["/access/v1/"]
    response = asyncio.run(route(Request("POST", "/access/v1/evaluation", dict(headers or {}), body)))
    return response.status, json.loads(response.body)


AUTHZEN_REQUEST = {"subject": {"type": "user", "id": "alice", "properties": {"roles": ["analyst"], "tenant": "acme"}},
                   "action": {"name": "tool.call"}, "resource": {"type": "tool", "id": "crm.query"}}


@pytest.mark.parametrize("failure", STATED_CATEGORIES, ids=lambda f: f.name.lower())
def test_authzen_decisions(tmp_path: Path, failure: Failure) -> None:
    case = _case(tmp_path, failure)
    status, doc = _authzen(case, json.dumps(AUTHZEN_REQUEST).encode())
    assert status == 200
    assert doc["decision"] is False
    assert doc["context"]["status"] == failure.status
    _audited(case, doc["context"]["decision_id"], failure.status)


@pytest.mark.parametrize(("failure", "body", "token"), [
    (Failure.MALFORMED, b'{"subject": 1, "subject": 2}', None),
    (Failure.UNAUTHENTICATED, json.dumps(AUTHZEN_REQUEST).encode(), "a-token-of-sixteen-chars"),
], ids=["malformed", "unauthenticated"])
def test_authzen_request_failures(tmp_path: Path, failure: Failure, body: bytes, token: str | None) -> None:
    case = _case(tmp_path, Failure.FORBIDDEN)
    status, doc = _authzen(case, body, token=token)
    assert status == failure.answer.door_status
    assert doc["decision"] is False
    _audited(case, doc["decision_id"], failure.status)


# --- ext_proc: the exchange's later stages ---------------------------------------------------------

def _exchange(decision_id: str, redact: list[str]) -> ep.ProcessingRequest:
    """The request headers as ext_proc sees them, with the exchange document ext_authz left."""
    message = ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=":path", raw_value=b"/v1/chat/completions"),
        base_pb2.HeaderValue(key="x-agentgov-decision-id", raw_value=decision_id.encode())])))
    doc = struct_pb2.Struct()
    doc.update({EXCHANGE_KEY: {"decision_id": decision_id, "redact": redact,
                               "subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme"},
                               "actions": [{"kind": "llm.chat", "name": "gpt-4o-mini", "resource_type": "model",
                                            "resource_id": "gpt-4o-mini", "protocol": "openai.chat"}]}})
    message.metadata_context.filter_metadata[EXT_AUTHZ_NAMESPACE].CopyFrom(doc)
    return message


async def _process(service: ExternalProcessorService, messages: list[ep.ProcessingRequest]) -> list[Any]:
    async def stream() -> AsyncIterator[ep.ProcessingRequest]:
        for message in messages:
            yield message

    return [r async for r in service.Process(stream(), None)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("failure", "governed", "body"), [
    (Failure.FORBIDDEN, False, b'{"messages": []}'),  # redaction asked for, no rewriting on this edge
    (Failure.MALFORMED, True, b'{"a": 1, "a": 2}'),  # a body the rewriter cannot read one way
], ids=["forbidden", "malformed"])
def test_ext_proc_request_body_failures(tmp_path: Path, failure: Failure, governed: bool, body: bytes) -> None:
    governor = Governor(Answers(Decision(allow=True, status=200)), None,
                        hooks=build_hooks(Config(base=tmp_path)), options=GovernorOptions(can_redact=True))
    service = ExternalProcessorService(governor if governed else None)
    message = ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True))
    responses = asyncio.run(_process(service, [_exchange("d" * 32, ["EMAIL"]), message]))
    immediate = responses[-1].immediate_response
    assert immediate.status.code == failure.status
    doc = json.loads(immediate.body)
    assert doc["error"] == failure.answer.error
    assert doc["decision_id"] == "d" * 32


def test_ext_proc_internal_failure_answers_the_tables_status_for_the_exchange(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    case = _case(tmp_path, Failure.FORBIDDEN)
    service = ExternalProcessorService(case.governor)

    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "_request_body", explode)
    body = ep.ProcessingRequest(request_body=ep.HttpBody(body=b"{}", end_of_stream=True))
    responses = asyncio.run(_process(service, [_exchange("e" * 32, []), body]))
    immediate = responses[-1].immediate_response
    assert immediate.status.code == Failure.INTERNAL.status
    doc = json.loads(immediate.body)
    assert doc["reasons"] == ["internal_error"]
    assert doc["decision_id"] == "e" * 32


def test_late_is_counted_not_allowed(tmp_path: Path) -> None:
    """Envoy stopped waiting: the answer is never an allow (Envoy sent its own 503), and it is counted
    under the table's `late` outcome."""
    from prometheus_client import REGISTRY

    case = _case(tmp_path, Failure.FORBIDDEN)
    case.governor = Governor(Answers(Decision(allow=True, status=200)), None, hooks=[bind(case.recorder)])

    class Expired:
        def time_remaining(self) -> float:
            return 0.0

    def late() -> float:
        return REGISTRY.get_sample_value("agentgov_decisions_total", {"api": "ext_authz", "outcome": "late",
                                                                      "reason": "deadline_exceeded"}) or 0.0

    before = late()
    request = authz.CheckRequest()
    request.attributes.request.http.method = "GET"
    request.attributes.request.http.path = "/v1/models"
    asyncio.run(AuthorizationService(case.governor).Check(request, Expired()))  # type: ignore[arg-type]
    assert late() == before + 1
    assert Failure.LATE.answer.outcome == "late"


def test_every_door_is_driven_here() -> None:
    """A new door must be added to this module: every server module that answers requests is named."""
    doors = {"ext_authz", "http_authz", "decision_service", "data_api", "authzen", "ext_proc"}
    tested = Path(__file__).read_text()
    for door in doors:
        assert f"server.{door} import" in tested

