"""Protocol parsers: table tests and property-based fuzzing (they must only ever raise ProtocolError)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.classify import classify
from agentgov.engine.protocols.jsonbody import decode_json
from agentgov.engine.protocols.llm import parse_llm
from agentgov.engine.protocols.mcp import parse_mcp


def test_mcp_tool_call_single_and_batch() -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "crm.query",
                                                                          "arguments": {"q": "a@b.co", "n": [1, "x"]}}}
    [action] = parse_mcp(json.dumps(call).encode(), "crm")
    assert (action.kind, action.name, action.resource_type) == ("tool.call", "crm.query", "tool")
    assert action.arguments == {"q": "a@b.co", "n": [1, "x"]}
    assert ("arguments.q", "a@b.co") in action.texts
    assert ("arguments.n[1]", "x") in action.texts
    batch = [call, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "file:///a"}},
             {"jsonrpc": "2.0", "id": 4, "method": "prompts/get", "params": {"name": "summarize"}},
             {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {}}]
    kinds = [a.kind for a in parse_mcp(json.dumps(batch).encode(), "crm")]
    assert kinds == ["tool.call", "tool.list", "mcp.session", "resource.read", "prompt.get", "mcp.session"]


@pytest.mark.parametrize(("body", "message"), [
    (b"", "empty"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"[]", "empty JSON-RPC batch"),
    (b'{"id": 1, "method": "tools/call"}', "JSON-RPC 2.0"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}', "params.name"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "arguments": [1]}}', "object"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {}}', "params.uri"),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', "non-empty string"),
    (b"[" * 100 + b"]" * 100, "nested too deeply"),
])
def test_mcp_malformed(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_mcp(body, "s")


def test_llm_apis() -> None:
    chat = parse_llm("/v1/chat/completions", json.dumps({
        "model": "gpt-4o", "max_completion_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}).encode())
    assert (chat.name, chat.arguments) == ("gpt-4o", {"model": "gpt-4o", "stream": True, "max_tokens": 100})
    assert chat.texts == (("messages[0].content[0].text", "hi"),)
    anthropic = parse_llm("/v1/messages", json.dumps({
        "model": "claude-sonnet-4", "max_tokens": 5, "system": "be brief",
        "messages": [{"role": "user", "content": "yo"}]}).encode())
    assert anthropic.texts == (("system", "be brief"), ("messages[0].content", "yo"))
    responses = parse_llm("/v1/responses", json.dumps({"model": "gpt-4o", "input": "q",
                                                       "max_output_tokens": 9}).encode())
    assert responses.arguments["max_tokens"] == 9
    for bad in ({"messages": []}, {"model": "m", "messages": []}, {"model": "m", "max_tokens": -1, "messages": [{}]},
                {"model": "m", "stream": "yes", "messages": [{"content": "x"}]}):
        with pytest.raises(ProtocolError):
            parse_llm("/v1/chat/completions", json.dumps(bad).encode())


def test_classify_routes() -> None:
    assert classify("GET", "/health", "h", b"")[0].kind == "http"
    assert classify("POST", "/crm/mcp", "h", b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')[0].resource_id == "crm"
    assert classify("POST", "/v1/chat/completions?x=1", "h",
                    b'{"model":"m","messages":[{"content":"a"}]}')[0].kind == "llm.chat"


@given(st.binary(max_size=300))
def test_parsers_raise_only_protocol_errors_on_bytes(body: bytes) -> None:
    for path in ("/mcp", "/v1/chat/completions", "/v1/messages", "/v1/responses"):
        with contextlib.suppress(ProtocolError):
            classify("POST", path, "h", body)


json_docs = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(
                             st.sampled_from(["jsonrpc", "method", "params", "name", "arguments", "model", "messages",
                                              "content", "uri", "id", "input", "max_tokens", "stream", "text"]),
                             c, max_size=5), max_leaves=15)


@given(json_docs)
def test_parsers_raise_only_protocol_errors_on_json(doc: object) -> None:
    body = json.dumps(doc).encode()
    for path in ("/mcp", "/v1/chat/completions", "/v1/messages", "/v1/responses"):
        try:
            actions = classify("POST", path, "h", body)
        except ProtocolError:
            continue
        assert actions
        assert all(a.kind and isinstance(a.arguments, dict) for a in actions)


def test_repeated_json_keys_are_refused() -> None:
    """Parsers disagree on which repeated key wins; the policy must see what the backend acts on."""
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "web.search", "name": "crm.delete"}}'
    with pytest.raises(ProtocolError, match="repeats a key in one object"):
        classify("POST", "/mcp", "h", body)


def test_mcp_filter_metadata_alone_and_with_a_body() -> None:
    meta = {"method": "tools/call", "params": {"name": "crm.query", "arguments": {"limit": 5.0, "q": "x"}},
            "id": 7.0, "jsonrpc": "2.0"}
    [from_meta] = classify("POST", "/crm/mcp", "h", b"", mcp_metadata=meta)
    assert (from_meta.kind, from_meta.name, from_meta.arguments, from_meta.resource_id) == (
        "tool.call", "crm.query", {"limit": 5, "q": "x"}, "crm.query")
    assert isinstance(from_meta.arguments["limit"], int)
    same = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": "crm.query", "arguments": {"limit": 5, "q": "x"}}}).encode()
    assert classify("POST", "/crm/mcp", "h", same, mcp_metadata=meta)[0].name == "crm.query"
    different = same.replace(b'"crm.query"', b'"crm.delete"')
    with pytest.raises(ProtocolError, match="different JSON-RPC calls"):
        classify("POST", "/crm/mcp", "h", different, mcp_metadata=meta)
    [response] = classify("POST", "/mcp", "h", b"", mcp_metadata={"method": "__jsonrpc_response"})
    assert (response.kind, response.name) == ("mcp.session", "response")


def test_configured_mcp_paths_are_parsed_as_mcp() -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    assert classify("POST", "/tools", "h", body)[0].kind == "http"
    [action] = classify("POST", "/tools?x=1", "h", body, mcp_paths=("/tools",))
    assert (action.kind, action.protocol) == ("tool.list", "mcp")


@pytest.mark.parametrize(("body", "message"), [
    (b'{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "a", "Name": "b"}}',
     "keys in one object that differ only in case"),
    (b'{"a": {"ID": 1, "id": 2}}', "differ only in case"),
    (b'{"n": ' + b"9" * 5000 + b"}", "outside the 64-bit range"),
    (b'{"n": 9223372036854775808}', "outside the 64-bit range"),
    (b'{"n": -9223372036854775809}', "outside the 64-bit range"),
    (b'{"n": 1e400}', "too large to represent"),
    (b'{"n": NaN}', "NaN or Infinity"),
    (b'{"n": -Infinity}', "NaN or Infinity"),
    (b'{"s": "\\ud800"}', "unpaired UTF-16 surrogate"),
    (b'{"\\udfff": 1}', "unpaired UTF-16 surrogate"),
    (b'{"a": 1, "a": 1}', "repeats a key in one object"),
])
def test_bodies_two_parsers_could_read_differently_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_json(body)
    assert message in str(err.value)
    assert "Name" not in str(err.value) and "ud800" not in str(err.value)  # noqa: PT018 - nothing of the body echoed


def test_numbers_at_the_edges_of_64_bits_and_paired_surrogates_are_fine() -> None:
    doc = decode_json(b'{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.5e308, "d": "\\ud83d\\ude00"}')
    assert doc == {"a": 2**63 - 1, "b": -(2**63), "c": 1.5e308, "d": "\U0001f600"}


@given(st.dictionaries(st.text(alphabet="aAbBßSs", min_size=1, max_size=3),
                       st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=2, max_size=6))
def test_case_folding_collisions_are_always_refused(doc: dict[str, int]) -> None:
    body = json.dumps(doc).encode()
    if len({k.casefold() for k in doc}) != len(doc):
        with pytest.raises(ProtocolError, match="differ only in case"):
            decode_json(body)
    else:
        assert decode_json(body) == doc


@pytest.mark.parametrize(("path", "fields", "expected"), [
    ("/v1/chat/completions", {"max_tokens": None, "max_completion_tokens": 300}, 300),
    ("/v1/chat/completions", {"max_tokens": 200, "max_completion_tokens": None}, 200),
    ("/v1/chat/completions", {"max_tokens": 200, "max_completion_tokens": 200}, 200),
    ("/v1/chat/completions", {"max_tokens": None}, None),
    ("/v1/responses", {"max_output_tokens": 50, "max_tokens": 9999}, 50),  # Responses reads only its own field
    ("/v1/messages", {"max_tokens": 70}, 70),
])
def test_the_effective_output_limit_is_what_the_api_reads(path: str, fields: dict[str, object],
                                                          expected: int | None) -> None:
    doc: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "x"}], "input": "x", **fields}
    action = parse_llm(path, json.dumps(doc).encode())
    assert action.arguments.get("max_tokens") == expected


def test_two_different_output_limits_are_refused() -> None:
    doc = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10, "max_completion_tokens": 9000}
    with pytest.raises(ProtocolError, match="max_completion_tokens and max_tokens disagree"):
        parse_llm("/v1/chat/completions", json.dumps(doc).encode())
