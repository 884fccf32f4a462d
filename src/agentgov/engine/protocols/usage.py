"""Token usage read from an LLM response as it streams past: one JSON body, or server-sent events.

Pure and incremental: feed it the body chunks Envoy's ext_proc hands over, then `finish()`.
Understands OpenAI Chat Completions (`usage.prompt_tokens/completion_tokens`, in the last stream
chunk when the client asked for `stream_options.include_usage`), OpenAI Responses
(`response.completed` carries `response.usage`) and Anthropic Messages (`message_start` carries
the input tokens, each `message_delta` the output tokens so far). Anything it cannot read is
`None`, never a guess: a caller decides what unknown usage means.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

# A JSON body larger than this is not buffered for metering (LLM answers are far smaller).
MAX_JSON_BYTES = 8 * 1024 * 1024
# One server-sent event larger than this is skipped rather than buffered without bound.
MAX_EVENT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    model: str = ""


class UsageMeter:
    def __init__(self, content_type: str) -> None:
        self.streaming = "text/event-stream" in content_type.lower()
        self._buffer = bytearray()
        self._overflow = False
        self._input: int | None = None
        self._output: int | None = None
        self._model = ""

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buffer += chunk
        if not self.streaming:
            if len(self._buffer) > MAX_JSON_BYTES:
                self._overflow = True
                self._buffer.clear()
            return
        self._drain_events()

    def finish(self) -> Usage | None:
        if self.streaming:
            self._buffer += b"\n\n"  # a last event without its blank line still counts
            self._drain_events()
        elif not self._overflow and self._buffer:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                self._read(json.loads(bytes(self._buffer)))
        self._buffer.clear()
        if self._input is None or self._output is None:
            return None
        return Usage(self._input, self._output, self._model)

    def _drain_events(self) -> None:
        normalized = self._buffer.replace(b"\r\n", b"\n")
        *events, rest = normalized.split(b"\n\n")
        self._buffer = bytearray(rest) if len(rest) <= MAX_EVENT_BYTES else bytearray()
        for event in events:
            data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
            if not data or data == b"[DONE]":
                continue
            try:
                self._read(json.loads(data))
            except (ValueError, UnicodeDecodeError):
                continue

    def _read(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        kind = doc.get("type")
        if kind == "response.completed" and isinstance(doc.get("response"), dict):
            doc = doc["response"]
        elif kind == "message_start" and isinstance(doc.get("message"), dict):
            doc = doc["message"]
        model = doc.get("model")
        if isinstance(model, str) and model:
            self._model = model[:128]
        usage = doc.get("usage")
        if not isinstance(usage, dict):
            return
        tokens_in = _count(usage, "prompt_tokens", "input_tokens")
        tokens_out = _count(usage, "completion_tokens", "output_tokens")
        if tokens_in is not None:
            self._input = tokens_in
        if tokens_out is not None:
            # Anthropic's message_delta repeats the running total, so the last figure is the answer.
            self._output = tokens_out


def _count(usage: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
