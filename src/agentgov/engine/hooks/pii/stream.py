"""Inspect a server-sent event stream as it passes, catching values split across events.

An LLM streams its answer a few characters per event, so an e-mail address can arrive as
`ali` + `ce@exam` + `ple.com`. The inspector joins the streamed text (the delta fields of OpenAI
Chat, OpenAI Responses and Anthropic Messages events) into one logical text and holds back the
last `holdback` characters: an event is released only once that many characters have arrived after
it (or the stream ends), so any finding up to that length is seen whole before its first character
leaves. A finding that started in released text is carried on: its remaining characters are removed
from the events that follow. Events without a delta (an MCP message, `message_start`) are inspected
on their own. What to do with findings (pass, redact, block) is asked of a callback: the policy.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentgov.engine.hooks.pii.detectors import Span
from agentgov.engine.hooks.pii.jsonscan import redact_document, scan_document
from agentgov.engine.hooks.pii.scanner import Scanner

# One event larger than this is refused (the stream is blocked) rather than buffered without bound.
MAX_EVENT_BYTES = 1024 * 1024
_CHANNEL_BREAK = "\n\n"  # between different choices/blocks, so no finding is stitched across them


@dataclass(frozen=True)
class StreamAction:
    """The policy's answer to a set of finding types: pass (no redact), redact these, or block."""

    redact: frozenset[str] = frozenset()
    block: bool = False
    reasons: tuple[str, ...] = ()


Decide = Callable[[dict[str, int]], Awaitable[StreamAction]]  # {type: count} → action


@dataclass
class _Segment:
    ref: tuple[Any, ...]  # path to the delta string inside the event's document
    start: int  # absolute offsets in the logical text
    end: int


@dataclass
class _Event:
    lines: list[bytes]  # the non-data lines (event:, id:, retry:, comments), kept as they came
    data: bytes
    has_data: bool = True
    doc: Any = None
    segments: list[_Segment] = field(default_factory=list)
    end: int = 0  # logical offset this event reaches (its release point)

    def encode(self) -> bytes:
        data = self.data if self.doc is None else json.dumps(self.doc, ensure_ascii=False,
                                                             separators=(",", ":")).encode()
        lines = [*self.lines, *(b"data: " + part for part in data.split(b"\n") if self.has_data)]
        return b"\n".join(lines) + b"\n\n"


def _deltas(doc: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """(path to a streamed text fragment, channel) for the event shapes of the three LLM APIs."""
    if not isinstance(doc, dict):
        return []
    out: list[tuple[tuple[Any, ...], Any]] = []
    kind = doc.get("type")
    if kind == "content_block_delta" and isinstance(doc.get("delta"), dict):  # Anthropic
        for key in ("text", "partial_json", "thinking"):
            if isinstance(doc["delta"].get(key), str):
                out.append((("delta", key), ("block", doc.get("index"), key)))
    elif isinstance(kind, str) and kind.startswith("response.") and kind.endswith(".delta") \
            and isinstance(doc.get("delta"), str):  # OpenAI Responses
        out.append((("delta",), ("output", doc.get("output_index"), doc.get("content_index"), kind)))
    elif isinstance(doc.get("choices"), list):  # OpenAI Chat Completions chunks
        for i, choice in enumerate(doc["choices"]):
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str):
                out.append((("choices", i, "delta", "content"), ("choice", choice.get("index", i))))
            for j, call in enumerate(delta.get("tool_calls") or []):
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    out.append((("choices", i, "delta", "tool_calls", j, "function", "arguments"),
                                ("tool", choice.get("index", i), call.get("index", j))))
    return out


def _get(doc: Any, ref: tuple[Any, ...]) -> Any:
    for key in ref:
        doc = doc[key]
    return doc


def _set(doc: Any, ref: tuple[Any, ...], value: Any) -> None:
    for key in ref[:-1]:
        doc = doc[key]
    doc[ref[-1]] = value


class SseInspector:
    def __init__(self, scanner: Scanner, decide: Decide, *, holdback: int = 256,
                 template: str = "[REDACTED:{type}]", blocked_event: Callable[[StreamAction], bytes]) -> None:
        self._scanner = scanner
        self._decide = decide
        self._holdback = holdback
        self._template = template
        self._blocked_event = blocked_event
        self._buffer = bytearray()
        self._pending: list[_Event] = []
        self._text = ""  # the logical text from offset `_base` on (released tail + pending)
        self._base = 0
        self._released = 0  # logical offset up to which text has left
        self._channel: Any = None
        self._carry: list[Span] = []  # findings that began in released text and go on past it
        self.blocked: StreamAction | None = None
        self.redactions = 0
        self.findings: dict[str, int] = {}

    async def feed(self, chunk: bytes) -> bytes:
        """Bytes to send on now (possibly b"": held back)."""
        if self.blocked is not None:
            return b""
        self._buffer += chunk
        normalized = self._buffer.replace(b"\r\n", b"\n")
        *complete, rest = normalized.split(b"\n\n")
        if len(rest) > MAX_EVENT_BYTES:
            return await self._block(StreamAction(block=True, reasons=("response_event_too_large",)))
        self._buffer = bytearray(rest)
        out = bytearray()
        for raw in map(bytes, complete):
            if raw.strip():
                out += await self._add(raw)
                if self.blocked is not None:
                    return bytes(out)
        out += await self._release(final=False)
        return bytes(out)

    async def finish(self) -> bytes:
        if self.blocked is not None:
            return b""
        out = bytearray()
        if self._buffer.strip():
            out += await self._add(bytes(self._buffer).replace(b"\r\n", b"\n").strip(b"\n"))
        self._buffer.clear()
        if self.blocked is None:
            out += await self._release(final=True)
        return bytes(out)

    async def _add(self, raw: bytes) -> bytes:
        lines = raw.split(b"\n")
        data_parts = [ln[5:].removeprefix(b" ") for ln in lines if ln.startswith(b"data:")]
        event = _Event(lines=[ln for ln in lines if not ln.startswith(b"data:")], data=b"\n".join(data_parts),
                       has_data=bool(data_parts))
        try:
            event.doc = json.loads(event.data) if data_parts else None
        except ValueError:
            event.doc = None
        deltas = _deltas(event.doc)
        if not deltas:
            # Not streamed text: inspect it on its own, in order (everything before it leaves first).
            out = await self._release(final=True)
            if self.blocked is not None:
                return out
            return out + await self._inspect_whole(event)
        for ref, channel in deltas:
            text = _get(event.doc, ref)
            if self._channel is not None and channel != self._channel:
                self._text += _CHANNEL_BREAK
            self._channel = channel
            start = self._base + len(self._text)
            self._text += text
            event.segments.append(_Segment(ref, start, start + len(text)))
        event.end = self._base + len(self._text)
        self._pending.append(event)
        return b""

    async def _inspect_whole(self, event: _Event) -> bytes:
        if event.doc is None:
            return event.encode() if event.data or event.lines else b""
        found = scan_document(self._scanner, event.doc)
        if not found:
            return event.encode()
        counts: dict[str, int] = {}
        for _, spans in found:
            for s in spans:
                counts[s.type] = counts.get(s.type, 0) + 1
        self._note(counts)
        action = await self._decide(counts)
        if action.block:
            return await self._block(action)
        if action.redact:
            event.doc, n = redact_document(event.doc, self._scanner, action.redact, self._template)
            self.redactions += n
        return event.encode()

    async def _release(self, *, final: bool) -> bytes:
        limit = self._base + len(self._text) - (0 if final else self._holdback)
        ready = [e for e in self._pending if e.end <= limit]
        if not ready:
            return b""
        spans = [Span(s.start + self._base, s.end + self._base, s.type, s.category, s.confidence)
                 for s in self._scanner.scan(self._text)]
        fresh = [s for s in spans if s.end > self._released]
        action = StreamAction()
        if fresh or self._carry:
            counts: dict[str, int] = {}
            for s in fresh:
                counts[s.type] = counts.get(s.type, 0) + 1
            if counts:
                self._note(counts)
                action = await self._decide(counts)
                if action.block:
                    return await self._block(action)
        removals = [s for s in fresh if s.type in action.redact] + self._carry
        out = bytearray()
        for event in ready:
            self._pending.remove(event)
            for seg in event.segments:
                _set(event.doc, seg.ref, self._rewrite(seg, removals))
            out += event.encode()
            self._released = event.end
        self._carry = [s for s in removals if s.end > self._released]
        keep_from = max(self._base, self._released - self._holdback)
        self._text = self._text[keep_from - self._base:]
        self._base = keep_from
        return bytes(out)

    def _rewrite(self, seg: _Segment, removals: list[Span]) -> str:
        original = self._text[seg.start - self._base:seg.end - self._base]
        hits = sorted((s for s in removals if s.start < seg.end and seg.start < s.end), key=lambda s: s.start)
        if not hits:
            return original
        parts: list[str] = []
        at = seg.start
        for s in hits:
            if s.start >= at:
                parts.append(self._text[at - self._base:s.start - self._base])
                parts.append(self._template.format(type=s.type))
                self.redactions += 1
            at = max(at, min(s.end, seg.end))
        parts.append(self._text[at - self._base:seg.end - self._base])
        return "".join(parts)

    def _note(self, counts: dict[str, int]) -> None:
        for t, n in counts.items():
            self.findings[t] = self.findings.get(t, 0) + n

    async def _block(self, action: StreamAction) -> bytes:
        self.blocked = action
        self._pending.clear()
        self._text = ""
        return self._blocked_event(action)
