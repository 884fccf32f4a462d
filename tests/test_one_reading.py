"""One reading of every request, through the real Envoy: where agentgov and a backend could read a
request differently, it is refused, or both sides are made to read it the same way (docs/architecture.md §3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agentgov.cli.stack import LocalStack
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, request, send

pytestmark = pytest.mark.envoy

CHAT = {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module", params=["rego", "cedar"])
def stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    s = LocalStack(policies=POLICIES, engine=request.param)
    with s:
        yield s


def alice(stack: LocalStack) -> dict[str, str]:
    return bearer(stack.keys.token("alice", ["analyst"], "acme"))


def go_like_read(body: bytes) -> dict[str, Any]:
    """How Go's encoding/json fills a struct: keys matched case-insensitively, the last one wins."""
    out: dict[str, Any] = {}
    for key, value in json.loads(body, object_pairs_hook=list):
        out[key.lower()] = value
    return out


def test_keys_differing_only_in_case_are_refused(stack: LocalStack) -> None:
    body = (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
            b'{"name": "web.search", "Name": "crm.export", "arguments": {}}}')
    # The differential is real: a Go server behind the gateway would run crm.export.
    assert go_like_read(json.dumps(json.loads(body, object_pairs_hook=list)[3][1]).encode())["name"] == "crm.export"
    status, headers, answer = send(stack, "/mcp", None, alice(stack), raw=body)
    assert (status, answer["reasons"]) == (400, ["malformed_request"])
    assert answer["detail"] == "request body has keys in one object that differ only in case"
    assert "x-demo-seen" not in headers


@pytest.mark.parametrize(("raw", "detail"), [
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "web.search", "arguments": '
     b'{"limit": NaN}}}', "NaN or Infinity"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "web.search", "arguments": '
     b'{"limit": ' + b"1" * 5000 + b"}}}", "64-bit range"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "web.search", "arguments": '
     b'{"limit": 1e400}}}', "too large"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "web.search", "arguments": '
     b'{"q": "\\ud800"}}}', "surrogate"),
])
def test_numbers_and_strings_not_every_engine_reads_alike_are_400(stack: LocalStack, raw: bytes,
                                                                   detail: str) -> None:
    status, headers, answer = send(stack, "/mcp", None, alice(stack), raw=raw)
    assert status == 400, answer
    assert detail in answer["detail"]
    assert "Traceback" not in json.dumps(answer)
    assert "x-demo-seen" not in headers


def test_a_body_in_another_charset_is_refused(stack: LocalStack) -> None:
    body = json.dumps(CHAT).encode("latin-1")
    status, _, answer = send(stack, "/v1/chat/completions", None,
                             {**alice(stack), "content-type": "application/json; charset=iso-8859-1"}, raw=body)
    assert (status, answer["reasons"]) == (415, ["unsupported_charset"])
    ok = send(stack, "/v1/chat/completions", CHAT, {**alice(stack), "content-type": "application/json; charset=UTF-8"})
    assert ok[0] == 200


def test_not_utf8_is_refused(stack: LocalStack) -> None:
    status, _, answer = send(stack, "/mcp", None, alice(stack), raw=b'{"jsonrpc": "2.0", "method": "\xff"}')
    assert (status, answer["detail"]) == (400, "request body is not valid UTF-8")


def test_mcp_headers_must_agree_with_the_body(stack: LocalStack) -> None:
    agree = {**alice(stack), "mcp-method": "tools/call", "mcp-name": "crm.query"}
    assert send(stack, "/mcp", CALL, agree)[0] == 200
    for header, value in (("mcp-method", "tools/list"), ("mcp-name", "crm.export")):
        status, headers, answer = send(stack, "/mcp", CALL, {**alice(stack), header: value})
        assert (status, answer["reasons"]) == (400, ["malformed_request"]), header
        assert "x-demo-seen" not in headers


def test_paths_are_read_normalised_by_both_sides(stack: LocalStack) -> None:
    # A percent-encoded letter: the backend decodes it and serves the chat API, so agentgov reads an LLM call.
    for path in ("/v1/chat/%63ompletions", "/v1/./chat/completions", "/v1//chat/completions", "/x/../v1/chat/completions"):
        status, _, answer = send(stack, path, CHAT, alice(stack))
        assert status == 200, (path, answer)
        assert answer["object"] == "chat.completion"
        denied = send(stack, path, CHAT, bearer(stack.keys.token("s", ["support"], "acme")))
        assert (denied[0], denied[2]["reasons"]) == (403, ["default_deny"])  # judged as the model call it is


def test_encoded_slashes_are_refused_before_anything_runs(stack: LocalStack) -> None:
    status, headers, _ = request(stack.url + "/v1/chat%2Fcompletions", "POST", CHAT, alice(stack))
    assert status == 400
    assert "x-demo-seen" not in headers


def test_headers_with_underscores_never_reach_the_backend(stack: LocalStack) -> None:
    status, headers, _ = send(stack, "/mcp", CALL, {**alice(stack), "x_agentgov_subject": "mallory",
                                                   "x_agentgov_roles": "admin"})
    assert status == 200
    seen = json.loads(headers["x-demo-seen"])
    assert seen["x-agentgov-subject"] == "alice"
    assert "x_agentgov_subject" not in seen  # Envoy dropped it (the backend reports what it would map)
    assert "x_agentgov_roles" not in seen


def test_batches_are_bounded(stack: LocalStack) -> None:
    batch = [{**CALL, "id": i} for i in range(33)]
    status, headers, answer = send(stack, "/mcp", batch, alice(stack))
    assert (status, answer["detail"]) == (400, "JSON-RPC batch of 33 messages; at most 32 are accepted")
    assert "x-demo-seen" not in headers
    assert send(stack, "/mcp", batch[:32], alice(stack))[0] == 200
