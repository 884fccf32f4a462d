"""The HTTP ext_authz transport (Envoy's http_service): the same answers as gRPC through the real
Envoy, and the wire handled strictly: malformed, oversized and pipelined requests, header injection,
and what HTTP mode cannot carry failing closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.cli.stack import LocalStack
from agentgov.engine.model import Decision, HttpDirectives, Obligations, Subject
from agentgov.engine.pipeline import Envelope, Verdict
from agentgov.engine.server.http_authz import AuthzHandler, HttpServer, Request, Response, _Connection
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, send

# --- the same answers over both transports, through Envoy ------------------------------------------

@pytest.fixture(scope="module")
def stacks() -> Iterator[dict[str, LocalStack]]:
    http = LocalStack(policies=POLICIES, transport="http", max_request_bytes=4096)
    grpc = LocalStack(policies=POLICIES, transport="grpc", max_request_bytes=4096)
    with http, grpc:
        yield {"http": http, "grpc": grpc}


def _cases(stack: LocalStack) -> list[tuple[str, str, Any, dict[str, str], bytes | None]]:
    alice = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    dev = bearer(stack.keys.token("dev1", ["developer"], "acme"))
    chat = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    return [
        ("allowed tool call", "/mcp", CALL, {**alice, "x-agentgov-roles": "admin", "x-agentgov-extra": "1"}, None),
        ("forbidden tool", "/mcp", CALL, dev, None),
        ("no token", "/mcp", CALL, {}, None),
        ("bad token", "/mcp", CALL, {"authorization": "Bearer not.a.jwt"}, None),
        ("malformed json", "/mcp", None, alice, b'{"jsonrpc": "2.0", "method": '),
        ("repeated key", "/mcp", None, alice, b'{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}'),
        ("llm chat", "/v1/chat/completions", chat, alice, None),
        ("llm model not granted", "/v1/chat/completions", {**chat, "model": "o1-pro"}, alice, None),
        ("other charset", "/mcp", None, {**alice, "content-type": "application/json; charset=iso-8859-1"},
         json.dumps(CALL).encode()),
        ("body over the limit", "/mcp", None, alice, b'{"jsonrpc":"2.0","x":"' + b"a" * 8000 + b'"}'),
    ]


def _observed(status: int, headers: dict[str, str], body: Any) -> dict[str, Any]:
    seen = json.loads(headers.get("x-demo-seen", "{}"))
    return {
        "status": status,
        "reasons": body.get("reasons") if isinstance(body, dict) and status != 200 else None,
        "detail": body.get("detail") if isinstance(body, dict) and status != 200 else None,
        "upstream": {k: v for k, v in seen.items() if k in ("x-agentgov-subject", "x-agentgov-tenant",
                                                              "x-agentgov-roles", "x-agentgov-extra")},
        "www_authenticate": headers.get("www-authenticate", "").split(",")[0],
        "decision_id": len(headers.get("x-agentgov-decision-id", seen.get("x-agentgov-decision-id", ""))),
        "revision": bool(headers.get("x-agentgov-policy-revision") or seen.get("x-agentgov-policy-revision")),
    }


def test_both_transports_give_the_same_answers(stacks: dict[str, LocalStack]) -> None:
    answers: dict[str, dict[str, Any]] = {}
    for transport, stack in stacks.items():
        for name, path, body, headers, raw in _cases(stack):
            answers.setdefault(name, {})[transport] = _observed(*send(stack, path, body, headers, raw))
    for name, by_transport in answers.items():
        assert by_transport["http"] == by_transport["grpc"], name
    assert answers["allowed tool call"]["http"]["upstream"] == {
        "x-agentgov-subject": "alice", "x-agentgov-tenant": "acme", "x-agentgov-roles": "analyst"}
    assert [answers[n]["http"]["status"] for n in answers] == [200, 403, 401, 401, 400, 400, 200, 403, 415, 413]
    assert all(a["http"]["decision_id"] == 32 for a in answers.values())


def test_the_client_address_reaches_the_policy_and_cannot_be_forged(stacks: dict[str, LocalStack]) -> None:
    """Envoy sets x-agentgov-source-ip on the authorization request, over whatever a client sent."""
    stack = stacks["http"]
    alice = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    status, headers, _ = send(stack, "/mcp", CALL, {**alice, "x-agentgov-source-ip": "203.0.113.9"})
    assert status == 200
    seen = json.loads(headers["x-demo-seen"])
    assert "x-agentgov-source-ip" not in seen  # removed on the way to the backend, like any spoofed x-agentgov-*


# --- the wire, in process --------------------------------------------------------------------------

class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class StubDecider:
    """Answers with a prepared verdict: the transport's own behaviour is what is tested here."""

    wants_envoy_attributes = False
    local = None  # decisions are not made in this process

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.seen: list[Envelope] = []

    async def decide(self, env: Envelope) -> Verdict:
        self.seen.append(env)
        await asyncio.sleep(0)
        return self.verdict

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


ALLOW = Verdict(Decision(allow=True, reasons=("ok",), status=200), Subject("alice", ("analyst",), "acme"), "d" * 32,
                policy_revision="r@sha256:000000000000")


def _exchange(data: bytes | list[bytes], verdict: Verdict = ALLOW, *, max_body: int = 1024,
              exchange: bool = False) -> tuple[bytes, bool, StubDecider]:
    decider = StubDecider(verdict)

    async def body() -> tuple[bytes, bool]:
        transport = FakeTransport()
        connection = _Connection(AuthzHandler(decider, exchange=exchange), max_body, set())
        connection.connection_made(transport)
        for chunk in data if isinstance(data, list) else [data]:
            connection.data_received(chunk)
        for _ in range(50):
            await asyncio.sleep(0)
        return bytes(transport.out), transport.closed

    out, closed = asyncio.run(body())
    return out, closed, decider


def _request(path: str = "/ext_authz/mcp", headers: str = "", body: bytes = b"", method: str = "POST") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nhost: api.example\r\ncontent-length: {len(body)}\r\n{headers}\r\n").encode() \
        + body


def _responses(out: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    found = []
    while out:
        head, _, rest = out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        out = rest[length:]
    return found


def test_an_allow_sets_identity_headers_and_lists_removals() -> None:
    out, closed, decider = _exchange(_request(headers="x-agentgov-roles: admin\r\nx-request-id: r1\r\n"
                                                      "x-agentgov-source-ip: 10.1.2.3\r\n", body=b"{}"))
    (status, headers, body), = _responses(out)
    assert (status, body, closed) == (200, b"", False)
    assert headers["x-agentgov-subject"] == "alice"
    assert headers["x-agentgov-roles"] == "analyst"
    assert headers["x-agentgov-policy-revision"] == "r@sha256:000000000000"
    assert headers["x-envoy-auth-headers-to-remove"] == "x-agentgov-source-ip"  # a client's copy goes too
    env = decider.seen[0]
    assert (env.method, env.path, env.host, env.source_ip, env.request_id, env.body) == \
        ("POST", "/mcp", "api.example", "10.1.2.3", "r1", b"{}")


def test_a_deny_carries_status_headers_and_the_json_body() -> None:
    deny = replace(ALLOW, decision=Decision.deny("tool_not_permitted_for_role"), retry_after_s=None)
    (status, headers, body), = _responses(_exchange(_request(), deny)[0])
    assert status == 403
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["reasons"] == ["tool_not_permitted_for_role"]
    unauthenticated = replace(ALLOW, decision=Decision.deny("missing_token", status=401))
    (status, headers, _), = _responses(_exchange(_request(), unauthenticated)[0])
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer realm="agentgov"')


def test_pipelined_requests_are_answered_in_order_and_split_packets_are_joined() -> None:
    one, two = _request(body=b'{"a":1}'), _request(path="/ext_authz/v1/chat/completions", body=b'{"b":2}')
    stream = one + two
    out, closed, decider = _exchange([stream[:7], stream[7:40], stream[40:]])
    assert [s for s, _, _ in _responses(out)] == [200, 200]
    assert [e.path for e in decider.seen] == ["/mcp", "/v1/chat/completions"]
    assert not closed


@pytest.mark.parametrize(("data", "status"), [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n", 400),
    (_request(headers="x-big: " + "a" * 70_000 + "\r\n"), 431),
    (_request(body=b"x" * 80_000), 413),
    (_request(path="/elsewhere"), 404),
])
@pytest.mark.reliability
def test_bad_or_oversized_requests_get_a_clear_status_never_a_check(data: bytes, status: int) -> None:
    out, _, decider = _exchange(data)
    assert _responses(out)[0][0] == status
    assert decider.seen == []


@pytest.mark.parametrize(("verdict", "why"), [
    (replace(ALLOW, subject=Subject("alice\r\nx-agentgov-roles: admin", ("analyst",), "acme")), "header injection"),
    (replace(ALLOW, subject=Subject("ali\u00e7e\u2603", (), None)), "not Latin-1"),
    (replace(ALLOW, decision=Decision(allow=True, reasons=(), status=200,
                                      obligations=Obligations(headers={"classification": "secret"}))),
     "an obligation header Envoy would drop"),
    (replace(ALLOW, response_headers={"x-quota": "1"}), "a client header Envoy would send upstream"),
    (replace(ALLOW, decision=Decision(allow=True, reasons=(), status=200,
                                      directives=HttpDirectives(dynamic_metadata={"k": "v"}))), "dynamic metadata"),
])
@pytest.mark.reliability
def test_what_http_mode_cannot_carry_fails_closed(verdict: Verdict, why: str) -> None:
    (status, headers, body), = _responses(_exchange(_request(), verdict)[0])
    assert status == 503, why
    assert "x-agentgov-roles" not in headers, why
    assert json.loads(body)["reasons"] == ["internal_error"]


def test_the_exchange_document_for_ext_proc_travels_as_a_header() -> None:
    (status, headers, _), = _responses(_exchange(_request(), exchange=True)[0])
    assert status == 200
    assert json.loads(headers["agentgov-exchange"])["decision_id"] == "d" * 32


def test_health_and_draining() -> None:
    handler = AuthzHandler(StubDecider(ALLOW))
    ok = asyncio.run(handler(Request("GET", "/health", {}, b"")))
    handler.serving = False
    draining = asyncio.run(handler(Request("GET", "/health", {}, b"")))
    assert (ok.status, draining.status) == (200, 503)


def test_the_server_stops_accepting_and_finishes_what_is_in_flight() -> None:
    async def body() -> None:
        server = HttpServer(AuthzHandler(StubDecider(ALLOW)), max_body_bytes=1024)
        await server.start("127.0.0.1", 0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_request())
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        await server.stop(1.0)
        assert await reader.read() == b""  # closed once idle
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(body())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(min_value=1, max_value=64), max_size=8))
@pytest.mark.reliability
def test_any_bytes_get_an_http_answer_or_a_close_never_a_crash(data: bytes, cuts: list[int]) -> None:
    chunks, rest = [], data
    for n in cuts:
        chunks.append(rest[:n])
        rest = rest[n:]
    chunks.append(rest)
    out, _, _ = _exchange([c for c in chunks if c])
    assert out == b"" or out.startswith(b"HTTP/1.1 ")
    for status, _, _ in _responses(out):
        assert status in (200, 400, 404, 413, 431)


def test_a_route_that_raises_gets_a_500_and_the_connection_carries_on() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    async def body() -> list[int]:
        handler = AuthzHandler(StubDecider(ALLOW))
        handler.routes["/broken"] = broken
        transport = FakeTransport()
        connection = _Connection(handler, 1024, set())
        connection.connection_made(transport)
        connection.data_received(_request(path="/broken") + _request())
        for _ in range(50):
            await asyncio.sleep(0)
        return [s for s, _, _ in _responses(bytes(transport.out))]

    assert asyncio.run(body()) == [500, 200]
