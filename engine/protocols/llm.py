"""LLM APIs: OpenAI Chat Completions and Responses, Anthropic Messages → model, limits, texts."""

from __future__ import annotations

from typing import Any

from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json
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
        max_tokens = doc.get("max_output_tokens")
        texts = _responses_texts(doc)
        protocol = "openai.responses"
    elif path == ANTHROPIC_MESSAGES:
        max_tokens = doc.get("max_tokens")
        texts = _messages_texts(doc.get("messages"), "messages")
        system = doc.get("system")
        texts = _content_texts(system, "system") + texts if system is not None else texts
        protocol = "anthropic.messages"
    else:
        max_tokens = doc.get("max_completion_tokens", doc.get("max_tokens"))
        texts = _messages_texts(doc.get("messages"), "messages")
        protocol = "openai.chat"
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0):
        raise ProtocolError("max_tokens must be a non-negative integer")
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise ProtocolError("stream must be a boolean")
    arguments: dict[str, Any] = {"model": model, "stream": stream}
    if max_tokens is not None:
        arguments["max_tokens"] = max_tokens
    return ParsedAction("llm.chat", model, "model", model, arguments, tuple(texts), protocol)


def _messages_texts(messages: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("`messages` must be a non-empty array")
    out: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ProtocolError(f"{path}[{i}] must be an object")
        out.extend(_content_texts(message.get("content"), f"{path}[{i}].content"))
    return out


def _content_texts(content: Any, path: str) -> list[tuple[str, str]]:
    """Content is a string or an array of parts; text parts (`text`, `input_text`) are scanned."""
    if content is None:
        return []
    if isinstance(content, str):
        return [(path, content)]
    if isinstance(content, list):
        out: list[tuple[str, str]] = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                out.append((f"{path}[{j}]", part))
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append((f"{path}[{j}].text", part["text"]))
            elif isinstance(part, dict) and isinstance(part.get("content"), str | list):
                out.extend(_content_texts(part["content"], f"{path}[{j}].content"))
        return out
    raise ProtocolError(f"{path} must be a string or an array of content parts")


def _responses_texts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(doc.get("instructions"), str):
        out.append(("instructions", doc["instructions"]))
    value = doc.get("input")
    if isinstance(value, str):
        out.append(("input", value))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.extend(_content_texts(item.get("content"), f"input[{i}].content"))
            elif isinstance(item, str):
                out.append((f"input[{i}]", item))
    elif value is not None:
        raise ProtocolError("`input` must be a string or an array")
    return out
