"""Inspecting server-sent event streams as they pass: a value split across events is still caught,
however the bytes are chunked; secrets end the stream with a clean error event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.engine.hooks.pii.detectors import CATEGORY_OF
from agentgov.engine.hooks.pii.scanner import Scanner, redact_text
from agentgov.engine.hooks.pii.stream import MAX_EVENT_BYTES, SseInspector, StreamAction

SCANNER = Scanner()


async def policy(counts: dict[str, int]) -> StreamAction:
    """As the shipped library answers for a redact-classified model: secrets block, PII is redacted."""
    if any(CATEGORY_OF[t] == "secret" for t in counts):
        return StreamAction(block=True, reasons=("secret_detected",))
    return StreamAction(redact=frozenset(counts))


def blocked(action: StreamAction) -> bytes:
    return b"event: error\ndata: " + json.dumps({"reasons": list(action.reasons)}).encode() + b"\n\n"


def openai_stream(pieces: list[str]) -> bytes:
    events = [{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def run(stream: bytes, cuts: list[int], holdback: int = 64) -> tuple[bytes, SseInspector]:
    inspector = SseInspector(SCANNER, policy, holdback=holdback, blocked_event=blocked)

    async def go() -> bytes:
        out, at = bytearray(), 0
        for size in cuts:
            out += await inspector.feed(stream[at:at + size])
            at += size
        out += await inspector.feed(stream[at:])
        return bytes(out + await inspector.finish())

    return asyncio.run(go()), inspector


def deltas(raw: bytes) -> str:
    text = []
    for block in raw.decode().split("\n\n"):
        data = "\n".join(line[6:] for line in block.split("\n") if line.startswith("data: "))
        if data and data != "[DONE]":
            doc = json.loads(data)
            text += [c["delta"].get("content", "") for c in doc.get("choices", [])]
    return "".join(text)


def test_an_email_split_across_three_events_is_redacted() -> None:
    out, inspector = run(openai_stream(["write to ali", "ce@exam", "ple.com today"]), [])
    assert deltas(out) == "write to [REDACTED:EMAIL] today"
    assert out.endswith(b"data: [DONE]\n\n")
    assert inspector.findings == {"EMAIL": 1}


@settings(max_examples=120, deadline=None)
@given(st.lists(st.text(alphabet="abcdef .,", min_size=0, max_size=12), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=7), st.lists(st.integers(min_value=1, max_value=60), max_size=30),
       st.integers(min_value=24, max_value=128))
def test_chunking_and_event_boundaries_never_change_what_is_released(words: list[str], at: int, cuts: list[int],
                                                                       holdback: int) -> None:
    parts = list(words)
    parts.insert(at % (len(parts) + 1), " jane.doe@example.org ")
    whole = "".join(parts)
    # Split the whole text into events at arbitrary points, then the bytes at arbitrary points.
    pieces, i = [], 0
    for n in cuts:
        pieces.append(whole[i:i + n % 9 + 1])
        i += n % 9 + 1
    pieces.append(whole[i:])
    out, _ = run(openai_stream(pieces), cuts, holdback)
    assert deltas(out) == redact_text(whole, SCANNER.scan(whole))
    assert b"jane.doe" not in out


def test_a_private_key_in_the_stream_ends_it_with_an_error_event() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
    stream = openai_stream(["Here it is:\n", *[key[i:i + 10] for i in range(0, len(key), 10)], "\nmore text"])
    out, inspector = run(stream, [17] * 40)
    assert inspector.blocked is not None
    assert out.endswith(b'event: error\ndata: {"reasons": ["secret_detected"]}\n\n')
    assert b"MIIEvQ" not in out
    assert b"PRIVATE" not in out
    assert b"more text" not in out


def test_anthropic_and_responses_deltas_are_joined_too() -> None:
    anthropic = [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": t}}) for t in ["mail bo", "b@corp.io", "!"]]
    responses = [("response.output_text.delta", {"type": "response.output_text.delta", "output_index": 0,
                                                 "content_index": 0, "delta": t}) for t in ["call +1 202 9", "27 0711 now"]]
    for events in (anthropic, responses):
        raw = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
        out, _ = run(raw, [5] * 50)
        docs = [json.loads(b.split(b"data: ", 1)[1]) for b in out.split(b"\n\n") if b.strip()]
        text = "".join(d["delta"]["text"] if "text" in d["delta"] else d["delta"] for d in docs)  # type: ignore[index]
        assert "[REDACTED:" in text
        assert "bob@corp.io" not in text
        assert "927 0711" not in text
        assert all(b"event: " in b for b in out.split(b"\n\n") if b.strip())  # event names kept


def test_whole_messages_are_judged_on_their_own() -> None:
    message = {"jsonrpc": "2.0", "id": 4, "result": {"content": [{"type": "text", "text": "owner: kim@acme.io"}]}}
    raw = b"event: message\ndata: " + json.dumps(message).encode() + b"\r\n\r\n"
    out, _ = run(raw, [3] * 100)
    doc: dict[str, Any] = json.loads(out.split(b"data: ", 1)[1])
    assert doc["result"]["content"][0]["text"] == "owner: [REDACTED:EMAIL]"


def test_an_oversized_event_blocks_instead_of_buffering_without_bound() -> None:
    out, inspector = run(b"data: " + b"x" * (MAX_EVENT_BYTES + 10), [])
    assert inspector.blocked is not None
    assert inspector.blocked.reasons == ("response_event_too_large",)
    assert out.startswith(b"event: error")


def test_events_that_are_not_json_pass_untouched() -> None:
    out, _ = run(b": keep-alive\n\nevent: ping\ndata: hello\n\n", [])
    assert out == b": keep-alive\n\nevent: ping\ndata: hello\n\n"
