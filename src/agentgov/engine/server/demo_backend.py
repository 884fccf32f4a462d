"""A fake LLM API and MCP tool server for the demo and the end-to-end tests.

It answers instantly and echoes what crossed the trust boundary (docs/envoy.md, "The demo backend"):
`x-demo-seen` (the x-agentgov-* identity headers, the client-address headers, and whether credential
headers arrived, never their values), `x-demo-arguments` (MCP tool arguments as received, so a
redaction is visible), `x-demo-body-length`; the fake model repeats the prompt it received. It is
the only fake in the stack: Envoy and agentgov are real.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Sequence
from typing import Any

from aiohttp import web

_CREDENTIALS = ("authorization", "x-api-key")
# What a backend would take for the client's address: echoed so tests see the backend's view.
_ADDRESS_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded")


def _seen(request: web.Request) -> dict[str, str]:
    """The x-agentgov-* headers as received, the client-address headers, and whether credential
    headers arrived (never their values)."""
    # Also what a backend that maps `_` to `-` would take for an identity header (x_agentgov_subject).
    seen = {k.lower(): v for k, v in request.headers.items()
            if k.lower().replace("_", "-").startswith("x-agentgov-")}
    seen.update({name: "<present>" for name in _CREDENTIALS if name in request.headers})
    seen.update({name: request.headers[name] for name in _ADDRESS_HEADERS if name in request.headers})
    return seen


DEMO_TOOLS = ("crm.query", "crm.export", "hr.lookup", "tickets.create", "web.search", "code.exec")


def _fixture(kind: str) -> str:
    """What a tool "returns" when a test asks for it with `arguments.fixture` (made up per call: no key
    material lives in the repository)."""
    if kind == "private_key":
        body = base64.b64encode(os.urandom(96)).decode()
        return "here is the deploy key:\n-----BEGIN PRIVATE KEY-----\n" + "\n".join(
            body[i:i + 64] for i in range(0, len(body), 64)) + "\n-----END PRIVATE KEY-----"
    if kind == "email":
        return "The account owner is dana.fields@example.org; renewal is due in March."
    return "nothing special"


def _received(request: web.Request, raw: bytes) -> dict[str, str]:
    """What arrived, for tests that check a rewritten body: its length and the declared length, and
    for an LLM call the names of the tools it offered (`x-demo-tools`)."""
    out = {"x-demo-seen": json.dumps(_seen(request)), "x-demo-body-length": str(len(raw)),
           "x-demo-content-length": request.headers.get("content-length", "")}
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        return out
    if isinstance(doc, dict) and ("tools" in doc or "functions" in doc):
        tools = [t for t in (doc.get("tools") or []) + (doc.get("functions") or []) if isinstance(t, dict)]
        names = [t.get("name") or (t.get("function") or {}).get("name") or t.get("type") for t in tools]
        out["x-demo-tools"] = json.dumps([n for n in names if isinstance(n, str)])
        out["x-demo-tool-choice"] = json.dumps(doc.get("tool_choice"))
    return out


async def mcp(request: web.Request) -> web.Response:
    raw = await request.read()
    doc = json.loads(raw or b"{}")
    messages = doc if isinstance(doc, list) else [doc]
    answers: list[dict[str, Any]] = []
    received: list[Any] = []  # the tool arguments as they arrived: redaction shows here (x-demo-arguments)
    for m in messages:
        method = m.get("method")
        if method == "tools/list":
            result: dict[str, Any] = {"tools": [{"name": t, "description": f"the {t} tool"} for t in DEMO_TOOLS]}
        elif method == "tools/call":
            params = m.get("params", {})
            name = params.get("name")
            fixture = (params.get("arguments") or {}).get("fixture")
            received.append(params.get("arguments"))
            text = _fixture(fixture) if isinstance(fixture, str) else f"{name} ok"
            result = {"content": [{"type": "text", "text": text}]}
        else:
            result = {}
        answers.append({"jsonrpc": "2.0", "id": m.get("id"), "result": result})
    body = answers if isinstance(doc, list) else answers[0]
    headers = _received(request, raw)
    if received:
        # A header, not the result: the result is what agentgov inspects on the way back, and an echo
        # of the arguments there would be judged as tool output.
        headers["x-demo-arguments"] = json.dumps(received if isinstance(doc, list) else received[0])
    return web.json_response(body, headers=headers)


def _last_user_text(doc: dict[str, Any]) -> str:
    for message in reversed(doc.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def _tool_call(doc: dict[str, Any]) -> tuple[str, str] | None:
    """Asked `call TOOL {json}` with tools offered, the fake model calls TOOL with those arguments
    (JSON text), whatever tools it was offered (tests show agentgov stops what it may not call)."""
    prompt = _last_user_text(doc) or _responses_prompt(doc)
    if not doc.get("tools") or not prompt.startswith("call "):
        return None
    name, _, arguments = prompt[5:].partition(" ")
    return name, arguments.strip() or "{}"


def _responses_prompt(doc: dict[str, Any]) -> str:
    value = doc.get("input")
    if isinstance(value, str):
        return value
    for item in reversed(value if isinstance(value, list) else []):
        if isinstance(item, dict) and item.get("role") == "user" and isinstance(item.get("content"), str):
            return str(item["content"])
    return ""


def _pieces(text: str, size: int = 5) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _answer(doc: dict[str, Any]) -> str:
    """The fake model: echoes the prompt it received (so the demo shows what crossed the boundary),
    and, asked for a contact, answers with an e-mail address (so tests see output inspection)."""
    prompt = _last_user_text(doc)
    if "essay" in prompt.lower():  # a long answer, whatever max_tokens said (tests hold streams to budgets)
        return " ".join(f"paragraph {i}: the quarterly numbers look steady across every region." for i in range(40))
    if "contact" in prompt.lower():
        return "You can reach the on-call team at help.desk@example.org at any time."
    return f"demo answer (you said: {prompt})" if prompt else "demo answer"


# Fixed usage figures, so tests can check what agentgov meters.
DEMO_INPUT_TOKENS = 5
DEMO_OUTPUT_TOKENS = 2


async def chat(request: web.Request) -> web.StreamResponse:
    """OpenAI Chat Completions; with `stream`, server-sent events, a few characters each (usage last,
    if the client asked)."""
    raw = await request.read()
    doc = json.loads(raw or b"{}")
    usage = {"prompt_tokens": DEMO_INPUT_TOKENS, "completion_tokens": DEMO_OUTPUT_TOKENS,
             "total_tokens": DEMO_INPUT_TOKENS + DEMO_OUTPUT_TOKENS}
    answer = _answer(doc)
    call = _tool_call(doc)
    if call is not None:
        return await _chat_tool_call(request, doc, call, usage)
    if doc.get("stream"):
        pieces = [answer[i:i + 7] for i in range(0, len(answer), 7)]
        chunks: list[Any] = [{"id": "chatcmpl-demo", "object": "chat.completion.chunk", "model": doc.get("model"),
                              "choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]
        if (doc.get("stream_options") or {}).get("include_usage"):
            chunks.append({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "model": doc.get("model"),
                           "choices": [], "usage": usage})
        return await _sse(request, [(None, c) for c in chunks] + [(None, "[DONE]")])
    return web.json_response({
        "id": "chatcmpl-demo", "object": "chat.completion", "model": doc.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": usage,
    }, headers=_received(request, raw))


async def _chat_tool_call(request: web.Request, doc: dict[str, Any], call: tuple[str, str],
                          usage: dict[str, int]) -> web.StreamResponse:
    name, arguments = call
    base = {"id": "chatcmpl-demo", "object": "chat.completion.chunk", "model": doc.get("model")}
    if not doc.get("stream"):
        return web.json_response({
            **base, "object": "chat.completion", "usage": usage,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_demo", "type": "function", "function": {"name": name, "arguments": arguments}}]}}]})
    chunks: list[Any] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me check."}}]},
                         {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                             {"index": 0, "id": "call_demo", "type": "function",
                              "function": {"name": name, "arguments": ""}}]}}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}}]}
               for p in _pieces(arguments)]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return await _sse(request, [(None, c) for c in chunks] + [(None, "[DONE]")])


async def responses(request: web.Request) -> web.StreamResponse:
    """OpenAI Responses: a text answer, or a function call when asked `call TOOL {json}`; with
    `stream`, its typed events."""
    raw = await request.read()
    doc = json.loads(raw or b"{}")
    call = _tool_call(doc)
    usage = {"input_tokens": DEMO_INPUT_TOKENS, "output_tokens": DEMO_OUTPUT_TOKENS,
             "total_tokens": DEMO_INPUT_TOKENS + DEMO_OUTPUT_TOKENS}
    text_item = {"type": "message", "id": "msg_demo", "role": "assistant",
                 "content": [{"type": "output_text", "text": "demo answer"}]}
    output: list[Any] = [text_item]
    if call is not None:
        output.append({"type": "function_call", "id": "fc_demo", "call_id": "call_demo", "name": call[0],
                       "arguments": call[1], "status": "completed"})
    response = {"id": "resp_demo", "object": "response", "model": doc.get("model"), "status": "completed",
                "output": output, "usage": usage}
    if not doc.get("stream"):
        return web.json_response(response, headers=_received(request, raw))
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "response": {**response, "output": [], "usage": None}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "output_index": 0, "delta": "demo answer"}),
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": text_item})]
    if call is not None:
        item = output[1]
        events.append(("response.output_item.added", {"type": "response.output_item.added", "output_index": 1,
                                                      "item": {**item, "arguments": "", "status": "in_progress"}}))
        events += [("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                                                               "output_index": 1, "delta": p})
                   for p in _pieces(call[1])]
        events.append(("response.function_call_arguments.done", {"type": "response.function_call_arguments.done",
                                                                 "output_index": 1, "arguments": call[1]}))
        events.append(("response.output_item.done", {"type": "response.output_item.done", "output_index": 1,
                                                     "item": item}))
    events.append(("response.completed", {"type": "response.completed", "response": response}))
    return await _sse(request, events)


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic Messages; with `stream`, its event sequence (usage in message_start and message_delta).
    Asked `call TOOL {json}` with tools offered, it answers with a `tool_use` block."""
    raw = await request.read()
    doc = json.loads(raw or b"{}")
    call = _tool_call(doc)
    if call is not None:
        return await _messages_tool_use(request, doc, call)
    message = {"id": "msg_demo", "type": "message", "role": "assistant", "model": doc.get("model"),
               "content": [{"type": "text", "text": "demo answer"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": DEMO_INPUT_TOKENS, "output_tokens": DEMO_OUTPUT_TOKENS}}
    if not doc.get("stream"):
        return web.json_response(message, headers=_received(request, raw))
    start = {**message, "content": [], "usage": {"input_tokens": DEMO_INPUT_TOKENS, "output_tokens": 1}}
    return await _sse(request, [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "demo answer"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": DEMO_OUTPUT_TOKENS}}),
        ("message_stop", {"type": "message_stop"}),
    ])


async def _messages_tool_use(request: web.Request, doc: dict[str, Any], call: tuple[str, str]) -> web.StreamResponse:
    name, arguments = call
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = {"unreadable": arguments}
    usage = {"input_tokens": DEMO_INPUT_TOKENS, "output_tokens": DEMO_OUTPUT_TOKENS}
    message = {"id": "msg_demo", "type": "message", "role": "assistant", "model": doc.get("model"),
               "content": [{"type": "text", "text": "Let me check."},
                           {"type": "tool_use", "id": "toolu_demo", "name": name, "input": parsed}],
               "stop_reason": "tool_use", "usage": usage}
    if not doc.get("stream"):
        return web.json_response(message, headers={"x-demo-seen": json.dumps(_seen(request))})
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Let me check."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_demo", "name": name, "input": {}}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 1,
                                        "delta": {"type": "input_json_delta", "partial_json": p}})
               for p in _pieces(arguments)]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 1}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                                  "usage": {"output_tokens": DEMO_OUTPUT_TOKENS}}),
               ("message_stop", {"type": "message_stop"})]
    return await _sse(request, events)


async def _sse(request: web.Request, events: Sequence[tuple[str | None, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream",
                                           "x-demo-seen": json.dumps(_seen(request))})
    await response.prepare(request)
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        await response.write((f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode())
    await response.write_eof()
    return response


async def anything(request: web.Request) -> web.Response:
    """Any other route: report the path, query and headers (credentials left out) as they arrived."""
    headers = {k.lower(): ",".join(request.headers.getall(k)) for k in request.headers
               if k.lower() not in _CREDENTIALS}
    return web.json_response({"path": request.path, "query": request.query_string, "headers": headers},
                             headers={"x-demo-seen": json.dumps(_seen(request))})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/mcp", mcp)
    app.router.add_post("/{server}/mcp", mcp)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/responses", responses)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="agentgov demo backend (fake LLM + MCP server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
