"""LLM APIs: OpenAI Chat Completions and Responses, Anthropic Messages → model, limits, texts."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json, strings_in
from agentgov.engine.protocols.parsed import OfferedTool, ParsedAction

OPENAI_CHAT = "/v1/chat/completions"
OPENAI_RESPONSES = "/v1/responses"
ANTHROPIC_MESSAGES = "/v1/messages"
LLM_PATHS = (OPENAI_CHAT, OPENAI_RESPONSES, ANTHROPIC_MESSAGES)


def parse_llm(path: str, body: bytes) -> ParsedAction:
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise ProtocolError("LLM request body must be a JSON object")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise ProtocolError("LLM request needs a `model` string")
    if path == OPENAI_RESPONSES:
        max_tokens = _token_limit(doc, "max_output_tokens")
        texts = _responses_texts(doc)
        protocol = "openai.responses"
    elif path == ANTHROPIC_MESSAGES:
        max_tokens = _token_limit(doc, "max_tokens")
        texts = _messages_texts(doc.get("messages"), "messages")
        system = doc.get("system")
        texts = _content_texts(system, "system") + texts if system is not None else texts
        protocol = "anthropic.messages"
    else:
        max_tokens = _token_limit(doc, "max_completion_tokens", "max_tokens")
        texts = _messages_texts(doc.get("messages"), "messages")
        protocol = "openai.chat"
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise ProtocolError("stream must be a boolean")
    # OpenAI generates `n` choices (and `best_of` candidates) per request, each up to the token limit:
    # what the request may cost is the limit times that, and that is what the policy and the budget see.
    choices = _choices(doc) if protocol == "openai.chat" else 1
    arguments: dict[str, Any] = {"model": model, "stream": stream}
    if choices != 1:
        arguments["n"] = choices
    if max_tokens is not None:
        arguments["max_tokens"] = max_tokens * choices
        if choices != 1:
            arguments["max_tokens_per_choice"] = max_tokens
    return ParsedAction("llm.chat", model, "model", model, arguments, tuple(texts), protocol,
                        tools=offered_tools(doc, protocol))


MAX_TOOLS = 512  # more tools than any provider accepts in one request


def offered_tools(doc: dict[str, Any], protocol: str) -> tuple[OfferedTool, ...]:
    """The tools a request lets the model call, by the name the model will use to call them:
    OpenAI Chat `tools[].function.name` (and `tools[].custom.name`, legacy `functions[].name`),
    Responses `tools[].name` (a built-in tool without a name, `web_search` say, by its `type`),
    Anthropic `tools[].name`. Anything that is not a list of such objects is refused: a tool agentgov
    cannot name is one it cannot govern."""
    fields = ("tools", "functions") if protocol == "openai.chat" else ("tools",)
    out: list[OfferedTool] = []
    for field_name in fields:
        items = doc.get(field_name)
        if items is None:
            continue
        if not isinstance(items, list):
            raise ProtocolError(f"`{field_name}` must be an array")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ProtocolError(f"{field_name}[{i}] must be an object")
            name, schema = _tool_name_and_schema(item, protocol, field_name)
            if not isinstance(name, str) or not name:
                raise ProtocolError(f"{field_name}[{i}] has no tool name")
            out.append(OfferedTool(name, len(json.dumps(schema, separators=(",", ":"))) if schema is not None else 0))
    if len(out) > MAX_TOOLS:
        raise ProtocolError(f"more than {MAX_TOOLS} tools offered")
    return tuple(out)


def without_tools(path: str, body: bytes, names: Collection[str]) -> bytes:
    """The request body with the tools named removed from what it offers (and the JSON still valid).
    A `tool_choice` that forces one of them cannot be honoured without it: refused."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise ProtocolError("LLM request body must be a JSON object")
    protocol = {OPENAI_RESPONSES: "openai.responses", ANTHROPIC_MESSAGES: "anthropic.messages"}.get(path, "openai.chat")
    removed = set(names)
    forced = _forced_tool(doc.get("tool_choice")) or _forced_tool(doc.get("function_call"))
    if forced in removed:
        raise ProtocolError(f"tool_choice forces {forced[:64]}, which the caller may not call")
    for field_name in ("tools", "functions") if protocol == "openai.chat" else ("tools",):
        items = doc.get(field_name)
        if isinstance(items, list):
            doc[field_name] = [i for i in items if _tool_name_and_schema(i, protocol, field_name)[0] not in removed]
            if not doc[field_name]:
                del doc[field_name]  # an empty list is refused by some providers: no tools at all
    if not any(doc.get(f) for f in ("tools", "functions")):
        choice = doc.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, dict) else choice
        if kind in ("required", "any"):
            raise ProtocolError("tool_choice requires a tool, and every tool offered was removed")
        for option in ("tool_choice", "function_call", "parallel_tool_calls"):
            doc.pop(option, None)  # meaningless (and refused by providers) without tools
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _forced_tool(choice: Any) -> str | None:
    """The tool a `tool_choice` (or legacy `function_call`) forces, if it names one."""
    if not isinstance(choice, dict):
        return None
    for value in (choice.get("name"), _name_in(choice.get("function")), _name_in(choice.get("custom"))):
        if isinstance(value, str):
            return value
    return None


def _name_in(value: Any) -> Any:
    return value.get("name") if isinstance(value, dict) else None


def _tool_name_and_schema(item: dict[str, Any], protocol: str, field_name: str) -> tuple[Any, Any]:
    if field_name == "functions":
        return item.get("name"), item.get("parameters")
    if protocol == "openai.chat":
        kind = item.get("type", "function")
        inner = item.get(kind) if isinstance(kind, str) else None
        if not isinstance(inner, dict):
            raise ProtocolError(f"a `{kind}` tool needs its `{kind}` object")
        return inner.get("name"), inner.get("parameters", inner.get("format"))
    if protocol == "anthropic.messages":
        return item.get("name"), item.get("input_schema")
    # OpenAI Responses: function and custom tools are named; built-in tools are known by their type.
    name = item.get("name") if "name" in item else item.get("type")
    return name, item.get("parameters")


MAX_CHOICES = 128  # OpenAI's own bound on `n`


def _choices(doc: dict[str, Any]) -> int:
    """How many completions the request asks for: `n`, or `best_of` when larger (each candidate is
    generated and billed). null means absent (1); anything but an integer from 1 to 128 is refused."""
    counts = []
    for name in ("n", "best_of"):
        value = doc.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHOICES:
            raise ProtocolError(f"{name} must be an integer from 1 to {MAX_CHOICES}")
        counts.append(value)
    return max(counts, default=1)


def _token_limit(doc: dict[str, Any], *fields: str) -> int | None:
    """The output token limit the backend will apply: the API's limit fields, null meaning absent.
    Two fields with different values are refused: which one a backend honours is its own choice."""
    values = {f: doc[f] for f in fields if doc.get(f) is not None}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProtocolError(f"{name} must be a non-negative integer")
    if len(set(values.values())) > 1:
        raise ProtocolError(f"{' and '.join(values)} disagree; send one output token limit")
    return next(iter(values.values()), None)


def _messages_texts(messages: Any, path: str) -> list[tuple[str, str]]:
    """Every text a conversation carries: message content, and the tool calls (OpenAI `tool_calls`,
    legacy `function_call`) an assistant turn made, whose arguments are where agents put data."""
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("`messages` must be a non-empty array")
    out: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ProtocolError(f"{path}[{i}] must be an object")
        out.extend(_content_texts(message.get("content"), f"{path}[{i}].content"))
        calls = message.get("tool_calls")
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                out.extend(strings_in(fn.get("arguments"), f"{path}[{i}].tool_calls[{j}].function.arguments"))
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            out.extend(strings_in(legacy.get("arguments"), f"{path}[{i}].function_call.arguments"))
    return out


def _content_texts(content: Any, path: str) -> list[tuple[str, str]]:
    """Content is a string or an array of parts. Text parts (`text`, `input_text`, `output_text`),
    Anthropic `tool_use` input and `tool_result` content, and OpenAI Responses function call
    arguments and outputs are all scanned; images and files are not text."""
    if content is None:
        return []
    if isinstance(content, str):
        return [(path, content)]
    if isinstance(content, list):
        out: list[tuple[str, str]] = []
        for j, part in enumerate(content):
            out.extend(_part_texts(part, f"{path}[{j}]"))
        return out
    raise ProtocolError(f"{path} must be a string or an array of content parts")


def _part_texts(part: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(part, str):
        return [(path, part)]
    if not isinstance(part, dict):
        return []
    out: list[tuple[str, str]] = []
    if isinstance(part.get("text"), str):
        out.append((f"{path}.text", part["text"]))
    if isinstance(part.get("content"), str | list):
        out.extend(_content_texts(part["content"], f"{path}.content"))
    if part.get("type") == "tool_use" and "input" in part:
        out.extend(strings_in(part["input"], f"{path}.input"))
    for key in ("arguments", "output"):  # OpenAI Responses function_call / function_call_output items
        if key in part and part.get("type") in ("function_call", "function_call_output", "custom_tool_call",
                                                 "custom_tool_call_output"):
            out.extend(strings_in(part[key], f"{path}.{key}"))
    return out


def _responses_texts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(doc.get("instructions"), str):
        out.append(("instructions", doc["instructions"]))
    value = doc.get("input")
    if isinstance(value, str):
        out.append(("input", value))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(_part_texts(item, f"input[{i}]"))
    elif value is not None:
        raise ProtocolError("`input` must be a string or an array")
    return out
