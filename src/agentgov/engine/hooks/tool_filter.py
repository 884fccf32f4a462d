"""The `tools_list` hook: an MCP `tools/list` answer lists only the tools the caller may call.

An agent that is shown a tool it may not call will try it; a model that never sees it will not.
Each listed tool is put to the same policy as a call would be (phase `list`: no arguments yet, so
argument rules do not apply), and the answers are cached per subject and policy revision.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

from agentgov.engine.errors import REASON_HOOK, Failure
from agentgov.engine.hooks.base import BodyVerdict, PolicyQuestion, ResponseContext
from agentgov.engine.hooks.responses import JsonOrEventStream, complete_events
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json
from agentgov.engine.protocols.parsed import ParsedAction

MAX_BODY_BYTES = 8 * 1024 * 1024
CACHE_TTL_S = 60.0
CACHE_SIZE = 50_000


class ToolListHook:
    name = "tools_list"
    phases = frozenset({"response"})
    failure_mode = "deny"
    timeout_s: float | None = None

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, bool]] = OrderedDict()

    def response(self, context: ResponseContext) -> ToolListFilter | None:
        if not any(a.kind == "tool.list" for a in context.actions):
            return None
        return ToolListFilter(self, context)

    async def may_call(self, context: ResponseContext, tool: str) -> bool:
        s = context.subject
        key = (context.revision, s.id, s.tenant, s.roles, s.authenticated, tool)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        action = ParsedAction("tool.call", tool, "tool", tool, protocol="mcp")
        allowed = (await context.ask(PolicyQuestion("list", action))).allow
        self._cache[key] = (now + CACHE_TTL_S, allowed)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return allowed


class ToolListFilter(JsonOrEventStream):
    """Filters the `result.tools` of JSON-RPC answers, in a JSON body or in SSE events."""

    def __init__(self, hook: ToolListHook, context: ResponseContext) -> None:
        self._hook = hook
        self._context = context
        self._buffer = bytearray()

    async def on_body(self, chunk: bytes, end_of_stream: bool) -> BodyVerdict:
        self._buffer += chunk
        if len(self._buffer) > MAX_BODY_BYTES:
            # A listing too large to filter is a failure of this hook: fail closed as any hook failure
            # does (the error table's hook_error row), the list withheld.
            return BodyVerdict(block=True, block_status=Failure.HOOK_ERROR.status, reason=REASON_HOOK,
                               block_body=json.dumps({"error": Failure.HOOK_ERROR.answer.error,
                                                      "reasons": [REASON_HOOK],
                                                      "detail": "the tool listing is too large to filter"}).encode())
        if self._streaming:
            events, rest = complete_events(bytes(self._buffer), end_of_stream)
            self._buffer = bytearray(rest)
            out = bytearray()
            for event in events:
                out += await self._event(event) + b"\n\n"
            return BodyVerdict(replace=bytes(out))
        if not end_of_stream:
            return BodyVerdict(replace=b"")
        body = bytes(self._buffer)
        try:
            doc = decode_json(body)
        except ProtocolError:
            return BodyVerdict(replace=body)  # not JSON: nothing to filter (other hooks still judge it)
        filtered = await self._filter(doc)
        return BodyVerdict(replace=body if filtered is None else _dump(filtered))

    async def _event(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        data = b"\n".join(ln[5:].removeprefix(b" ") for ln in lines if ln.startswith(b"data:"))
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            return event
        filtered = await self._filter(doc)
        if filtered is None:
            return event
        return b"\n".join([*(ln for ln in lines if not ln.startswith(b"data:")), b"data: " + _dump(filtered)])

    async def _filter(self, doc: Any) -> Any:
        """The document with disallowed tools removed, or None when it lists no tools."""
        if isinstance(doc, list):
            items = [await self._filter(d) for d in doc]
            return None if all(i is None for i in items) else [d if i is None else i for d, i in zip(doc, items, strict=False)]
        result = doc.get("result") if isinstance(doc, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return None
        tools: list[Any] = result["tools"]
        kept = []
        for tool in tools:
            name = tool.get("name") if isinstance(tool, dict) else None
            if isinstance(name, str) and await self._hook.may_call(self._context, name):
                kept.append(tool)
        return {**doc, "result": {**result, "tools": kept}}


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
