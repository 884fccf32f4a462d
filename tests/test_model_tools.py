"""The tools a model may call are governed (issue: governance gaps §3), through the real Envoy, on
Rego and on Cedar: the tools an LLM request offers are each put to the policy as a `tool.call`
(`input.llm.tools` lists them), and a tool call in the model's answer (JSON or streamed, split over
many events) that the caller may not make is stopped before the agent sees it, for OpenAI Chat,
OpenAI Responses and Anthropic Messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agentgov.cli.stack import LocalStack
from agentgov.engine.hooks.model_tools import ModelToolCalls, document_calls
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.llm import offered_tools, parse_llm
from tests.conftest import POLICIES
from tests.http_helpers import bearer, request

pytestmark = pytest.mark.envoy

CHAT, RESPONSES, MESSAGES = "/v1/chat/completions", "/v1/responses", "/v1/messages"
ALLOWED_CALL = 'call crm.query {"tenant_id": "acme", "query": "open deals"}'
FORBIDDEN_TOOL = 'call crm.export {"tenant_id": "acme", "format": "csv"}'  # admins only
FORBIDDEN_ARGUMENTS = 'call crm.query {"tenant_id": "globex", "query": "their deals"}'  # another tenant


@pytest.fixture(scope="module", params=["rego", "cedar"])
def stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    with LocalStack(policies=POLICIES, engine=request.param, ext_proc=True) as running:
        yield running


def offer(api: str, tools: list[str]) -> list[dict[str, Any]]:
    if api == CHAT:
        return [{"type": "function", "function": {"name": t, "parameters": {"type": "object"}}} for t in tools]
    if api == RESPONSES:
        return [{"type": "function", "name": t, "parameters": {"type": "object"}} for t in tools]
    return [{"name": t, "input_schema": {"type": "object"}} for t in tools]


def body(api: str, prompt: str, tools: list[str], *, stream: bool) -> dict[str, Any]:
    model = "gpt-4o-mini"  # granted to analysts; the fake backend answers any model
    doc: dict[str, Any] = {"model": model, "stream": stream, "tools": offer(api, tools)}
    if api == RESPONSES:
        doc.update(input=prompt, max_output_tokens=200)
    else:
        doc.update(messages=[{"role": "user", "content": prompt}], max_tokens=200)
    return doc


def ask(stack: LocalStack, api: str, prompt: str, tools: list[str], *, stream: bool = False,
        roles: tuple[str, ...] = ("analyst",)) -> tuple[int, dict[str, str], bytes]:
    token = bearer(stack.keys.token("alice", list(roles), "acme"))
    return request(stack.url + api, "POST", body(api, prompt, tools, stream=stream), token)


def events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for event in raw.decode().replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].strip() for line in event.split("\n") if line.startswith("data:"))
        if data and data != "[DONE]":
            out.append(json.loads(data))
    return out


def tool_call_names(api: str, answer: bytes, stream: bool) -> list[str]:
    """The tool calls that reached the agent."""
    if not stream:
        protocol = {CHAT: "openai.chat", RESPONSES: "openai.responses", MESSAGES: "anthropic.messages"}[api]
        return [c.name for c in document_calls(json.loads(answer), protocol)]
    names = []
    for doc in events(answer):
        for choice in doc.get("choices") or []:
            for call in (choice.get("delta") or {}).get("tool_calls") or []:
                names += [call["function"]["name"]] if call.get("function", {}).get("name") else []
        if doc.get("type") == "response.output_item.done" and doc["item"].get("type") == "function_call":
            names.append(doc["item"]["name"])
        if doc.get("type") == "content_block_start" and doc["content_block"].get("type") == "tool_use":
            names.append(doc["content_block"]["name"])
    return names


@pytest.fixture(scope="module", params=["rego", "cedar"])
def plain(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """No ext_proc: nothing can rewrite a request body here."""
    with LocalStack(policies=POLICIES, engine=request.param) as running:
        yield running


@pytest.mark.parametrize("api", [CHAT, RESPONSES, MESSAGES])
def test_offered_tools_the_caller_may_not_call_are_removed_before_the_model_sees_them(stack: LocalStack,
                                                                                    api: str) -> None:
    status, headers, _ = ask(stack, api, "hello", ["crm.query", "crm.export", "web.search"])
    assert status == 200
    assert json.loads(headers["x-demo-tools"]) == ["crm.query", "web.search"]  # valid JSON, crm.export gone
    # Only forbidden tools: the request goes on with none (an empty list some providers refuse).
    status, headers, _ = ask(stack, api, "hello", ["crm.export", "hr.lookup"])
    assert status == 200
    assert "x-demo-tools" not in headers
    # A caller who may call every tool is offered every one.
    assert json.loads(ask(stack, api, "hello", ["crm.query", "crm.export"], roles=("admin",))[1]["x-demo-tools"]) \
        == ["crm.query", "crm.export"]


def test_a_tool_choice_that_forces_a_removed_tool_is_refused(stack: LocalStack) -> None:
    token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    forced = {**body(CHAT, "hello", ["crm.query", "crm.export"], stream=False),
              "tool_choice": {"type": "function", "function": {"name": "crm.export"}}}
    status, _, raw = request(stack.url + CHAT, "POST", forced, token)
    assert (status, json.loads(raw)["reasons"]) == (403, ["tool_not_allowed"])
    required = {**body(MESSAGES, "hello", ["crm.export"], stream=False), "tool_choice": {"type": "any"}}
    status, _, raw = request(stack.url + MESSAGES, "POST", required, token)
    assert (status, json.loads(raw)["reasons"]) == (403, ["tool_not_allowed"])
    chosen = {**body(CHAT, "hello", ["crm.query", "crm.export"], stream=False),
              "tool_choice": {"type": "function", "function": {"name": "crm.query"}}}
    status, headers, _ = request(stack.url + CHAT, "POST", chosen, token)
    assert (status, json.loads(headers["x-demo-tools"])) == (200, ["crm.query"])


@pytest.mark.parametrize("api", [CHAT, RESPONSES, MESSAGES])
def test_without_ext_proc_a_request_offering_a_forbidden_tool_is_refused(plain: LocalStack, api: str) -> None:
    status, _, raw = ask(plain, api, "hello", ["crm.query", "crm.export"])
    answer = json.loads(raw)
    assert (status, answer["reasons"]) == (403, ["tool_not_allowed"])
    assert "crm.export" in answer["detail"]
    assert "crm.query" not in answer["detail"]
    assert ask(plain, api, "hello", ["crm.query", "crm.export"], roles=("admin",))[0] == 200
    assert ask(plain, api, "hello", ["crm.query", "web.search"])[0] == 200


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", [CHAT, RESPONSES, MESSAGES])
def test_an_allowed_tool_call_reaches_the_agent_whole(stack: LocalStack, api: str, stream: bool) -> None:
    status, _, raw = ask(stack, api, ALLOWED_CALL, ["crm.query"], stream=stream)
    assert status == 200
    assert tool_call_names(api, raw, stream) == ["crm.query"]
    if stream:
        assert not any(d.get("type") == "error" for d in events(raw))


@pytest.mark.parametrize("prompt", [FORBIDDEN_TOOL, FORBIDDEN_ARGUMENTS], ids=["tool", "arguments"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", [CHAT, RESPONSES, MESSAGES])
def test_a_tool_call_the_caller_may_not_make_never_reaches_the_agent(stack: LocalStack, api: str, stream: bool,
                                                                   prompt: str) -> None:
    """The model calls a tool it was not offered (or the offered tool with another tenant's id):
    the JSON answer becomes a 403; the stream ends with an error event, and no part of the call
    (its name, any piece of its arguments) was delivered, though it came split over many events."""
    status, _, raw = ask(stack, api, prompt, ["crm.query"], stream=stream)
    if not stream:
        answer = json.loads(raw)
        assert (status, answer["reasons"]) == (403, ["tool_not_allowed"])
        assert answer["decision_id"]
        return
    assert status == 200  # the stream had begun: it is cut, not answered anew
    docs = events(raw)
    assert docs[-1]["type"] == "error"
    assert docs[-1]["error"]["reasons"] == ["tool_not_allowed"]
    assert tool_call_names(api, raw, stream) == []
    assert b"tenant_id" not in raw  # not a fragment of the arguments
    assert b"globex" not in raw
    text = raw.decode()
    assert "Let me check." in text or "demo answer" in text  # the text before the call was delivered


# --- units: the parser and the stream reader ---------------------------------------------------

def test_offered_tools_are_read_by_the_name_the_model_calls_them() -> None:
    chat = {"tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
                      {"type": "custom", "custom": {"name": "b"}}], "functions": [{"name": "c"}]}
    assert [(t.name, t.schema_bytes) for t in offered_tools(chat, "openai.chat")] == [("a", 17), ("b", 0), ("c", 0)]
    responses = {"tools": [{"type": "function", "name": "a"}, {"type": "web_search"}]}
    assert [t.name for t in offered_tools(responses, "openai.responses")] == ["a", "web_search"]
    anthropic = {"tools": [{"name": "a", "input_schema": {}}, {"type": "web_search_20250305", "name": "web_search"}]}
    assert [t.name for t in offered_tools(anthropic, "anthropic.messages")] == ["a", "web_search"]
    action = parse_llm(CHAT, json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                         **chat}).encode())
    assert [t.name for t in action.tools] == ["a", "b", "c"]
    for bad, why in [({"tools": {}}, "must be an array"), ({"tools": ["x"]}, "must be an object"),
                     ({"tools": [{"type": "function", "function": {}}]}, "no tool name"),
                     ({"tools": [{"type": "function"}]}, "needs its `function` object"),
                     ({"tools": [{"type": "function", "function": {"name": "x"}}] * 513}, "more than 512")]:
        with pytest.raises(ProtocolError, match=why):
            offered_tools(bad, "openai.chat")


def test_the_removal_obligation_crosses_the_decision_service() -> None:
    from agentgov.engine.model import Decision, Obligations, Subject
    from agentgov.engine.pipeline import Verdict
    from agentgov.engine.server.decision_codec import response_from_verdict, verdict_from_response

    decision = Decision(allow=True, obligations=Obligations(remove_tools=("crm.export",)))
    verdict = Verdict(decision, Subject("alice", ("analyst",), "acme", authenticated=True), "d" * 32)
    again = verdict_from_response(response_from_verdict(verdict, include_input=False))
    assert again.decision.obligations.remove_tools == ("crm.export",)


def test_removing_tools_keeps_the_rest_of_the_request() -> None:
    from agentgov.engine.protocols.llm import without_tools

    doc = {"model": "m", "messages": [{"role": "user", "content": "é"}], "tool_choice": "auto",
           "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]}
    out = json.loads(without_tools(CHAT, json.dumps(doc).encode(), ["b"]))
    assert out == {**doc, "tools": [doc["tools"][0]]}
    none_left = json.loads(without_tools(CHAT, json.dumps(doc).encode(), ["a", "b"]))
    assert "tools" not in none_left
    assert "tool_choice" not in none_left
    with pytest.raises(ProtocolError, match="forces b"):
        without_tools(CHAT, json.dumps({**doc, "tool_choice": {"type": "function", "function": {"name": "b"}}}).encode(),
                      ["b"])
    with pytest.raises(ProtocolError, match="requires a tool"):
        without_tools(CHAT, json.dumps({**doc, "tool_choice": "required"}).encode(), ["a", "b"])


def test_a_call_split_over_events_is_read_whole() -> None:
    from agentgov.engine.hooks.base import ResponseContext
    from agentgov.engine.model import ANONYMOUS

    async def never(_: Any) -> Any:
        raise AssertionError("not asked here")

    reader = ModelToolCalls(ResponseContext("d", "/v1/messages", ANONYMOUS, (), ask=never), "anthropic.messages")
    for doc in [{"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "t",
                                                                            "input": {}}},
                {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
                {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ': 1}'}},
                {"type": "content_block_stop", "index": 1}]:
        reader._read_event(b"data: " + json.dumps(doc).encode())
    (call,) = reader._calls.values()
    assert (call.name, call.argument_object(), call.done) == ("t", {"a": 1}, True)
