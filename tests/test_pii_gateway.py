"""Is the data safe? End to end through the real Envoy with ext_authz and ext_proc: prompts redacted
on the way in, secrets refused, tool results and model output judged on the way out, tools/list
filtered to what the caller may call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agentgov.cli.stack import LocalStack
from tests.conftest import POLICIES
from tests.http_helpers import bearer, request, send

pytestmark = pytest.mark.envoy

EMAIL = "maria.lopez@acme-corp.io"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAQ7RZ3KXW5MN2PL4T"  # TEST VALUE: shaped like an access key id, issued by no one
OPENAI_KEY = "sk-proj-4fQe9LmT2xVb7RkN1cWz8YhJ3pGs6DaU0oKiE5tMnBvXqLr"  # TEST VALUE, not a key


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    s = LocalStack(policies=POLICIES, workers=2, ext_proc=True)
    with s:
        yield s


def alice(stack: LocalStack) -> dict[str, str]:
    return bearer(stack.keys.token("alice", ["analyst"], "acme"))


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def tool_call(name: str, arguments: dict[str, Any], rpc_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def test_prompt_reaches_the_backend_redacted_as_valid_json(stack: LocalStack) -> None:
    status, headers, body = send(stack, "/v1/chat/completions",
                                 chat(f"Email {EMAIL} a receipt for card {CARD}, thanks."), alice(stack))
    assert status == 200, body
    # The fake model echoes the prompt it received: it parsed the rewritten body, so it was valid JSON.
    answer = body["choices"][0]["message"]["content"]
    assert "[REDACTED:EMAIL]" in answer
    assert "[REDACTED:CREDIT_CARD]" in answer
    assert EMAIL not in json.dumps(body)
    assert "4111" not in json.dumps(body)
    # …and the length it was told is the length it got.
    assert headers["x-demo-content-length"] == headers["x-demo-body-length"]


def test_tool_arguments_reach_the_mcp_backend_redacted_and_the_demo_shows_it(stack: LocalStack) -> None:
    """crm.query redacts PII for analysts: the MCP server receives the arguments rewritten, and the
    demo backend's x-demo-arguments header shows what it received."""
    arguments = {"tenant_id": "acme", "query": "deals owned by jane.doe@example.org"}
    status, headers, _ = send(stack, "/mcp", tool_call("crm.query", arguments), alice(stack))
    assert status == 200
    assert json.loads(headers["x-demo-arguments"]) == {"tenant_id": "acme", "query": "deals owned by [REDACTED:EMAIL]"}


def test_prompt_without_pii_is_untouched(stack: LocalStack) -> None:
    status, headers, body = send(stack, "/v1/chat/completions", chat("What is our refund policy?"), alice(stack))
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "demo answer (you said: What is our refund policy?)"
    assert headers["x-demo-content-length"] == headers["x-demo-body-length"]


@pytest.mark.parametrize(("path", "payload"), [
    ("/mcp", tool_call("web.search", {"query": f"is {AWS_KEY} still active?"})),
    ("/v1/chat/completions", chat("my key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9\n"
                                  "-----END RSA PRIVATE KEY-----")),
    ("/v1/chat/completions", chat(f"why does {OPENAI_KEY} return 401?")),
])
def test_secrets_are_refused(stack: LocalStack, path: str, payload: dict[str, Any]) -> None:
    status, headers, body = send(stack, path, payload, alice(stack))
    assert (status, body["reasons"]) == (403, ["secret_detected"])
    assert "x-demo-seen" not in headers  # the backend never saw it
    assert AWS_KEY not in json.dumps(body)
    assert "PRIVATE KEY" not in json.dumps(body)


def test_pii_for_a_pii_deny_tool_is_refused(stack: LocalStack) -> None:
    status, _, body = send(stack, "/mcp", tool_call("web.search", {"query": f"who is {EMAIL}"}), alice(stack))
    assert (status, body["reasons"]) == (403, ["pii_blocked"])


def test_a_tool_result_carrying_a_private_key_never_reaches_the_client(stack: LocalStack) -> None:
    status, _, body = send(stack, "/mcp", tool_call("crm.query", {"tenant_id": "acme", "fixture": "private_key"}, 41),
                           alice(stack))
    assert status == 200  # MCP clients expect JSON-RPC: the result became an error for the same id
    assert body["id"] == 41
    assert body["error"]["code"] == -32001
    assert body["error"]["data"]["reasons"] == ["secret_detected"]
    assert "PRIVATE KEY" not in json.dumps(body)


def test_a_tool_result_with_pii_is_redacted_for_a_redact_tool(stack: LocalStack) -> None:
    status, _, body = send(stack, "/mcp", tool_call("crm.query", {"tenant_id": "acme", "fixture": "email"}),
                           alice(stack))
    assert status == 200
    text = body["result"]["content"][0]["text"]
    assert text == "The account owner is [REDACTED:EMAIL]; renewal is due in March."


def _sse_deltas(raw: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    deltas, events = [], []
    for block in raw.decode().split("\n\n"):
        data = "\n".join(line[6:] for line in block.split("\n") if line.startswith("data: "))
        if not data or data == "[DONE]":
            continue
        doc = json.loads(data)
        events.append(doc)
        for choice in doc.get("choices", []):
            if isinstance(choice.get("delta", {}).get("content"), str):
                deltas.append(choice["delta"]["content"])
    return deltas, events


def test_streamed_output_with_an_email_split_across_chunks_is_redacted(stack: LocalStack) -> None:
    body = chat("Who should I contact about access?", stream=True, stream_options={"include_usage": True})
    status, headers, raw = request(stack.url + "/v1/chat/completions", "POST", body, alice(stack))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    deltas, events = _sse_deltas(raw)
    text = "".join(deltas)
    assert text == "You can reach the on-call team at [REDACTED:EMAIL] at any time."
    assert b"help.desk" not in raw
    assert b"example.org" not in raw
    assert len(deltas) > 3  # still a stream, not one blob
    assert events[-1]["usage"]["completion_tokens"] == 2  # the usage chunk passed through


def test_streamed_output_is_unchanged_without_findings(stack: LocalStack) -> None:
    status, _, raw = request(stack.url + "/v1/chat/completions", "POST", chat("hello there", stream=True),
                             alice(stack))
    assert status == 200
    assert "".join(_sse_deltas(raw)[0]) == "demo answer (you said: hello there)"


@pytest.mark.parametrize(("roles", "visible"), [
    (["analyst"], ["crm.query", "web.search"]),
    (["developer"], ["web.search", "code.exec"]),
    (["admin"], ["crm.query", "crm.export", "hr.lookup", "tickets.create", "web.search", "code.exec"]),
])
def test_tools_list_shows_only_the_tools_the_caller_may_call(stack: LocalStack, roles: list[str],
                                                            visible: list[str]) -> None:
    token = stack.keys.token("u1", roles, "acme")
    status, _, body = send(stack, "/mcp", {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, bearer(token))
    assert status == 200
    assert [t["name"] for t in body["result"]["tools"]] == visible
    assert all(t["description"] for t in body["result"]["tools"])  # the entries themselves are untouched
