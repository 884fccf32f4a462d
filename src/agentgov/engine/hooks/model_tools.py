"""The `model_tools` hook: a tool call in a model's answer is a request the agent is about to make, so
it is put to the same policy as the agent's own `tool.call` (phase `request`, with the model's
arguments) before the agent sees it. A call the caller may not make blocks the answer: a JSON
answer becomes a 403, a stream ends with an error event before any part of that call is delivered.

Read: OpenAI Chat `choices[].message.tool_calls` (and legacy `function_call`), OpenAI Responses
`output[]` items of type `function_call` / `custom_tool_call`, Anthropic `content[]` blocks of type
`tool_use`; in streams, their deltas, joined. From the first event of a tool call on, events are held
back until every open call is complete and judged (a call split over many events is judged whole);
text before it flows as it comes. Tools the provider runs itself (web search, say) are governed
where they are offered: the request (pipeline/offered.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentgov.engine.errors import Failure
from agentgov.engine.hooks.base import BodyVerdict, PolicyQuestion, ResponseContext
from agentgov.engine.hooks.responses import JsonOrEventStream, complete_events
from agentgov.engine.protocols.parsed import ParsedAction

REASON = "tool_not_allowed"
UNREADABLE = "tool_call_unreadable"
MAX_BUFFER_BYTES = 8 * 1024 * 1024  # an answer (or a held-back run of events) larger than this is refused


@dataclass
class ToolCall:
    name: str = ""
    arguments: list[str] = field(default_factory=list)  # the argument text as it arrived, in parts
    parsed: Any = None  # arguments that came whole (Anthropic's JSON answer: an object)
    done: bool = False

    def argument_object(self) -> dict[str, Any] | None:
        """The call's arguments as an object (None: not a JSON object, so it cannot be judged)."""
        if self.parsed is not None:
            return self.parsed if isinstance(self.parsed, dict) else None
        text = "".join(self.arguments).strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class ModelToolsHook:
    name = "model_tools"
    phases = frozenset({"response"})
    failure_mode = "deny"
    timeout_s: float | None = None

    def response(self, context: ResponseContext) -> ModelToolCalls | None:
        llm = next((a for a in context.actions if a.kind == "llm.chat"), None)
        return None if llm is None else ModelToolCalls(context, llm.protocol)


class ModelToolCalls(JsonOrEventStream):
    def __init__(self, context: ResponseContext, protocol: str) -> None:
        self._context = context
        self._protocol = protocol
        self._buffer = bytearray()
        self._held: list[bytes] = []
        self._calls: dict[Any, ToolCall] = {}
        self._blocked = False

    async def on_body(self, chunk: bytes, end_of_stream: bool) -> BodyVerdict:
        if self._blocked:
            return BodyVerdict(replace=b"")
        self._buffer += chunk
        if len(self._buffer) + sum(map(len, self._held)) > MAX_BUFFER_BYTES:
            return self._refuse(UNREADABLE, "the answer is too large to inspect for tool calls")
        if not self._streaming:
            if not end_of_stream:
                return BodyVerdict(replace=b"")
            return await self._judge_document(bytes(self._buffer))
        events, rest = complete_events(bytes(self._buffer), end_of_stream)
        self._buffer = bytearray(rest)
        out = bytearray()
        for event in events:
            self._read_event(event)
            if self._calls or self._held:
                self._held.append(event)
            else:
                out += event + b"\n\n"
            if end_of_stream and event is events[-1]:
                for call in self._calls.values():
                    call.done = True  # the stream ended: what arrived is the whole call
            if self._calls and all(c.done for c in self._calls.values()):
                refusal = await self._judge(list(self._calls.values()))
                if refusal is not None:
                    return self._end_stream(bytes(out), *refusal)
                out += b"".join(e + b"\n\n" for e in self._held)
                self._held, self._calls = [], {}
        if end_of_stream and self._held:  # events held for a call that never started properly
            out += b"".join(e + b"\n\n" for e in self._held)
            self._held = []
        return BodyVerdict(replace=bytes(out))

    # --- judging -------------------------------------------------------------------------------

    async def _judge(self, calls: list[ToolCall]) -> tuple[str, str] | None:
        """None when every call may be made; else (reason, detail) of the first that may not."""
        for call in calls:
            arguments = call.argument_object()
            if not call.name or arguments is None:
                return UNREADABLE, f"the model called a tool agentgov cannot read ({call.name[:64] or 'no name'})"
            action = ParsedAction("tool.call", call.name, "tool", call.name, arguments, protocol="llm")
            decision = await self._context.ask(PolicyQuestion("request", action))
            if not decision.allow:
                return REASON, f"the model called {call.name[:64]}, which the caller may not call"
        return None

    async def _judge_document(self, body: bytes) -> BodyVerdict:
        try:
            doc = json.loads(body)
        except ValueError:
            return BodyVerdict(replace=body)  # not JSON: nothing here is a tool call
        refusal = await self._judge(document_calls(doc, self._protocol))
        if refusal is None:
            return BodyVerdict(replace=body)
        return self._refuse(*refusal)

    def _refuse(self, reason: str, detail: str) -> BodyVerdict:
        self._blocked = True
        if self._streaming:
            return self._end_stream(b"", reason, detail)
        return BodyVerdict(block=True, block_status=Failure.FORBIDDEN.status, reason=reason,
                           block_body=json.dumps({"error": Failure.FORBIDDEN.answer.error, "reasons": [reason],
                                                  "detail": detail,
                                                  "decision_id": self._context.decision_id}).encode())

    def _end_stream(self, passed: bytes, reason: str, detail: str) -> BodyVerdict:
        self._blocked = True
        self._held, self._calls = [], {}
        payload = json.dumps({"type": "error", "error": {"type": f"agentgov_{reason}", "reasons": [reason],
                                                         "message": detail,
                                                         "decision_id": self._context.decision_id}})
        return BodyVerdict(replace=passed + f"event: error\ndata: {payload}\n\n".encode(), block=True, reason=reason)

    # --- reading streams -----------------------------------------------------------------------

    def _read_event(self, event: bytes) -> None:
        data = b"\n".join(line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data.strip() == b"[DONE]":
            if data.strip() == b"[DONE]":
                for call in self._calls.values():
                    call.done = True
            return
        try:
            doc = json.loads(data)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if self._protocol == "openai.responses":
            self._responses_event(doc)
        elif self._protocol == "anthropic.messages":
            self._anthropic_event(doc)
        else:
            self._chat_event(doc)

    def _chat_event(self, doc: dict[str, Any]) -> None:
        for choice in doc.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = _obj(choice.get("delta"))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    fn = _obj(call.get("function"))
                    self._grow((index, call.get("index", 0)), fn.get("name"), fn.get("arguments"))
            legacy = delta.get("function_call")
            if isinstance(legacy, dict):
                self._grow((index, "function_call"), legacy.get("name"), legacy.get("arguments"))
            if choice.get("finish_reason") is not None:
                for key, call in self._calls.items():
                    if key[0] == index:
                        call.done = True

    def _responses_event(self, doc: dict[str, Any]) -> None:
        kind, index = doc.get("type"), doc.get("output_index")
        item = _obj(doc.get("item"))
        if kind in ("response.output_item.added", "response.output_item.done") and \
                item.get("type") in ("function_call", "custom_tool_call"):
            call = self._grow(index, item.get("name"), None)
            if kind == "response.output_item.done":
                whole = item.get("arguments", item.get("input"))
                if isinstance(whole, str):
                    call.arguments = [whole] if item.get("type") == "function_call" else [json.dumps({"input": whole})]
                call.done = True
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta") \
                and index in self._calls:
            self._grow(index, None, doc.get("delta"))
        elif kind in ("response.completed", "response.failed", "response.incomplete"):
            for call in self._calls.values():
                call.done = True

    def _anthropic_event(self, doc: dict[str, Any]) -> None:
        kind, index = doc.get("type"), doc.get("index")
        block = _obj(doc.get("content_block"))
        delta = _obj(doc.get("delta"))
        if kind == "content_block_start" and block.get("type") == "tool_use":
            initial = block.get("input")
            call = self._grow(index, block.get("name"), None)
            if isinstance(initial, dict) and initial:
                call.parsed = initial
        elif kind == "content_block_delta" and delta.get("type") == "input_json_delta" and index in self._calls:
            call = self._calls[index]
            call.parsed = None
            self._grow(index, None, delta.get("partial_json"))
        elif kind == "content_block_stop" and index in self._calls:
            self._calls[index].done = True
        elif kind == "message_stop":
            for call in self._calls.values():
                call.done = True

    def _grow(self, key: Any, name: Any, arguments: Any) -> ToolCall:
        call = self._calls.setdefault(key, ToolCall())
        if isinstance(name, str) and name:
            call.name = call.name or name
        if isinstance(arguments, str):
            call.arguments.append(arguments)
        return call


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def document_calls(doc: Any, protocol: str) -> list[ToolCall]:
    """The tool calls of a whole (non-streamed) answer."""
    if not isinstance(doc, dict):
        return []
    calls: list[ToolCall] = []
    if protocol == "openai.responses":
        for item in doc.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "function_call":
                calls.append(ToolCall(str(item.get("name") or ""), [str(item.get("arguments") or "")], done=True))
            elif isinstance(item, dict) and item.get("type") == "custom_tool_call":
                calls.append(ToolCall(str(item.get("name") or ""), parsed={"input": item.get("input")}, done=True))
    elif protocol == "anthropic.messages":
        for block in doc.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                calls.append(ToolCall(str(block.get("name") or ""), parsed=block.get("input"), done=True))
    else:
        for choice in doc.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            for call in message.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    calls.append(ToolCall(str(fn.get("name") or ""), [str(fn.get("arguments") or "")], done=True))
            legacy = message.get("function_call")
            if isinstance(legacy, dict):
                calls.append(ToolCall(str(legacy.get("name") or ""), [str(legacy.get("arguments") or "")], done=True))
    return calls
