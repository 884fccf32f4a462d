"""Token usage metering: the pure meter (table and property tests) and ext_proc through real Envoy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgov.cli.stack import LocalStack, free_port
from agentgov.engine.protocols.usage import Usage, UsageMeter
from agentgov.engine.server.demo_backend import DEMO_INPUT_TOKENS, DEMO_OUTPUT_TOKENS
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, request, send


def sse(*events: tuple[str | None, Any]) -> bytes:
    out = b""
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out += (f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode()
    return out


OPENAI_STREAM = sse((None, {"model": "gpt-4o", "choices": [{"delta": {"content": "a"}}], "usage": None}),
                    (None, {"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}),
                    (None, "[DONE]"))
RESPONSES_STREAM = sse(("response.created", {"type": "response.created", "response": {"model": "gpt-4.1"}}),
                       ("response.completed", {"type": "response.completed", "response": {
                           "model": "gpt-4.1", "usage": {"input_tokens": 20, "output_tokens": 7}}}))
ANTHROPIC_STREAM = sse(("message_start", {"type": "message_start", "message": {
                           "model": "claude-sonnet-4", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
                       ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 30}}),
                       ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 41}}),
                       ("message_stop", {"type": "message_stop"}))


@pytest.mark.parametrize(("content_type", "body", "expected"), [
    ("application/json", json.dumps({"model": "gpt-4o", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
     Usage(5, 2, "gpt-4o")),
    ("application/json", json.dumps({"object": "response", "model": "gpt-4.1",
                                     "usage": {"input_tokens": 8, "output_tokens": 1}}), Usage(8, 1, "gpt-4.1")),
    ("application/json", json.dumps({"type": "message", "model": "claude-sonnet-4",
                                     "usage": {"input_tokens": 4, "output_tokens": 6}}), Usage(4, 6, "claude-sonnet-4")),
    ("text/event-stream", OPENAI_STREAM.decode(), Usage(9, 3, "gpt-4o")),
    ("text/event-stream; charset=utf-8", RESPONSES_STREAM.decode(), Usage(20, 7, "gpt-4.1")),
    ("text/event-stream", ANTHROPIC_STREAM.decode(), Usage(12, 41, "claude-sonnet-4")),
    ("text/event-stream", OPENAI_STREAM.decode().replace("\n", "\r\n"), Usage(9, 3, "gpt-4o")),
    # Unknown usage is None, never a guess.
    ("text/event-stream", sse((None, {"model": "gpt-4o", "choices": [{"delta": {}}]}), (None, "[DONE]")).decode(), None),
    ("application/json", json.dumps({"model": "gpt-4o"}), None),
    ("application/json", json.dumps({"usage": {"prompt_tokens": -1, "completion_tokens": 2}}), None),
    ("application/json", json.dumps({"usage": {"prompt_tokens": True, "completion_tokens": 2}}), None),
    ("application/json", "{not json", None),
    ("application/json", "", None),
])
def test_meter_reads_each_api(content_type: str, body: str, expected: Usage | None) -> None:
    meter = UsageMeter(content_type)
    meter.feed(body.encode())
    assert meter.finish() == expected


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30),
       st.sampled_from([OPENAI_STREAM, RESPONSES_STREAM, ANTHROPIC_STREAM]))
def test_chunking_never_changes_the_answer(cuts: list[int], stream: bytes) -> None:
    whole = UsageMeter("text/event-stream")
    whole.feed(stream)
    expected = whole.finish()
    meter, at = UsageMeter("text/event-stream"), 0
    for size in cuts:
        meter.feed(stream[at:at + size])
        at += size
    meter.feed(stream[at:])
    assert meter.finish() == expected


@given(st.binary(max_size=2000), st.sampled_from(["application/json", "text/event-stream"]))
def test_garbage_never_raises(body: bytes, content_type: str) -> None:
    meter = UsageMeter(content_type)
    meter.feed(body)
    result = meter.finish()
    assert result is None or (result.input_tokens >= 0 and result.output_tokens >= 0)


def test_oversized_json_is_not_buffered() -> None:
    meter = UsageMeter("application/json")
    meter.feed(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "pad": "' + b"x" * (9 * 1024 * 1024))
    meter.feed(b'"}')
    assert meter.finish() is None


@pytest.fixture(scope="module")
def metered() -> Iterator[tuple[LocalStack, int]]:
    metrics_port = free_port()
    s = LocalStack(policies=POLICIES, ext_proc=True, server_extra={"metrics_port": metrics_port})
    try:
        s.start()
        yield s, metrics_port
    finally:
        s.stop()


def _tokens(metrics_port: int) -> dict[tuple[str, str], float]:
    status, _, raw = request(f"http://127.0.0.1:{metrics_port}/metrics", "GET")
    assert status == 200
    text = raw.decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith(("agentgov_llm_tokens_total{", "agentgov_llm_unmetered_total{")):
            labels, value = line.rsplit(" ", 1)
            out[(labels.split("{")[0], labels)] = float(value)
    return out


def _count(metrics: dict[tuple[str, str], float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for (n, lab), v in metrics.items() if n == name and all(w in lab for w in want))


@pytest.mark.envoy
@pytest.mark.parametrize(("role", "path", "body"), [
    ("analyst", "/v1/chat/completions",
     {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}),
    ("analyst", "/v1/chat/completions",
     {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}],
      "stream": True, "stream_options": {"include_usage": True}}),
    ("developer", "/v1/messages",
     {"model": "claude-sonnet-4", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}),
    ("developer", "/v1/messages",
     {"model": "claude-sonnet-4", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "stream": True}),
])
def test_ext_proc_meters_tokens_through_envoy(metered: tuple[LocalStack, int], role: str, path: str,
                                              body: dict[str, Any]) -> None:
    stack, metrics_port = metered
    before = _tokens(metrics_port)
    token = bearer(stack.keys.token("alice", [role], "acme"))
    status, _, answer = request(stack.url + path, "POST", body, token)
    assert status == 200
    assert b"demo answer" in answer or b"demo " in answer  # the response passed through whole
    after = _tokens(metrics_port)
    model = body["model"]
    for direction, n in (("input", DEMO_INPUT_TOKENS), ("output", DEMO_OUTPUT_TOKENS)):
        grown = _count(after, "agentgov_llm_tokens_total", tenant="acme", model=model, direction=direction) - \
            _count(before, "agentgov_llm_tokens_total", tenant="acme", model=model, direction=direction)
        assert grown == n, (direction, before, after)
    assert f"subject=alice model={model}" in stack.log("agentgov")


@pytest.mark.envoy
def test_streams_without_usage_are_counted_as_unmetered(metered: tuple[LocalStack, int]) -> None:
    stack, metrics_port = metered
    before = _count(_tokens(metrics_port), "agentgov_llm_unmetered_total", tenant="acme")
    token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    body = {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert request(stack.url + "/v1/chat/completions", "POST", body, token)[0] == 200
    assert _count(_tokens(metrics_port), "agentgov_llm_unmetered_total", tenant="acme") == before + 1


@pytest.mark.envoy
def test_non_llm_traffic_is_released_unmetered(metered: tuple[LocalStack, int]) -> None:
    stack, metrics_port = metered
    before = _tokens(metrics_port)
    status, _, body = send(stack, "/mcp", CALL, bearer(stack.keys.token("alice", ["analyst"], "acme")))
    assert (status, body["result"]["content"][0]["text"]) == (200, "crm.query ok")
    assert _tokens(metrics_port) == before
