"""LLM APIs: OpenAI Chat Completions and Responses, Anthropic Messages → model, limits, texts."""

from __future__ import annotations

from typing import Any

from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json, strings_in
from agentgov.engine.protocols.parsed import ParsedAction

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
    return ParsedAction("llm.chat", model, "model", model, arguments, tuple(texts), protocol)


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
