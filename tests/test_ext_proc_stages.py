"""The ext_proc adapter in process, message by message: what it asks Envoy for, what it rewrites,
and every way it refuses (the happy paths also run through the real Envoy in test_pii_gateway)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from agentgov.engine.config import build_governor, load_config
from agentgov.engine.pipeline import Envelope, Governor
from agentgov.engine.server.exchange import EXCHANGE_KEY, EXT_AUTHZ_NAMESPACE
from agentgov.engine.server.ext_proc import ExternalProcessorService
from tests.conftest import POLICIES

ALICE = {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True}


def governor(tmp_path: Path, ext_proc: bool = True) -> Governor:
    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False},
                                "server": {"ext_proc": ext_proc}}))
    return build_governor(load_config(path))


def headers_message(path: str, context: dict[str, Any] | None) -> ep.ProcessingRequest:
    message = ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=":path", raw_value=path.encode()),
        base_pb2.HeaderValue(key="x-agentgov-decision-id", raw_value=b"d" * 32)])))
    if context is not None:
        struct = struct_pb2.Struct()
        struct.update({EXCHANGE_KEY: context})
        message.metadata_context.filter_metadata[EXT_AUTHZ_NAMESPACE].CopyFrom(struct)
    return message


def response_headers(content_type: str, status: int = 200) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_headers=ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=":status", raw_value=str(status).encode()),
        base_pb2.HeaderValue(key="content-type", raw_value=content_type.encode())])))


def exchange(service: ExternalProcessorService, messages: list[ep.ProcessingRequest]) -> list[ep.ProcessingResponse]:
    async def requests() -> AsyncIterator[ep.ProcessingRequest]:
        for m in messages:
            yield m

    async def collect() -> list[ep.ProcessingResponse]:
        return [r async for r in service.Process(requests(), None)]

    return asyncio.run(collect())


def context(kind: str = "llm.chat", name: str = "gpt-4o-mini", redact: list[str] | None = None,
            protocol: str = "openai.chat") -> dict[str, Any]:
    rtype = {"llm.chat": "model", "tool.call": "tool", "tool.list": "server"}[kind]
    return {"decision_id": "d" * 32, "subject": ALICE, "redact": redact or [],
            "actions": [{"kind": kind, "name": name, "resource_type": rtype, "resource_id": name, "protocol": protocol}]}


CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mail ann.lee@example.org"}]})


def test_redaction_asks_for_the_body_and_rewrites_it_with_its_length(tmp_path: Path) -> None:
    service = ExternalProcessorService(governor(tmp_path))
    first, second = exchange(service, [
        headers_message("/v1/chat/completions", context(redact=["EMAIL"])),
        ep.ProcessingRequest(request_body=ep.HttpBody(body=CHAT.encode(), end_of_stream=True))])
    assert first.mode_override.request_body_mode == 2  # BUFFERED
    mutation = second.request_body.response
    body = mutation.body_mutation.body
    assert json.loads(body)["messages"][0]["content"] == "mail [REDACTED:EMAIL]"
    assert [(h.header.key, h.header.raw_value) for h in mutation.header_mutation.set_headers] == [
        ("content-length", str(len(body)).encode())]


def test_no_obligation_no_body_and_no_rewrite(tmp_path: Path) -> None:
    service = ExternalProcessorService(governor(tmp_path))
    (first,) = exchange(service, [headers_message("/v1/chat/completions", context())])
    assert first.mode_override.request_body_mode == 0


def test_a_body_that_is_not_json_is_refused_with_400(tmp_path: Path) -> None:
    service = ExternalProcessorService(governor(tmp_path))
    _, answer = exchange(service, [headers_message("/v1/chat/completions", context(redact=["EMAIL"])),
                                   ep.ProcessingRequest(request_body=ep.HttpBody(body=b"{nope", end_of_stream=True))])
    assert answer.immediate_response.status.code == 400
    assert json.loads(answer.immediate_response.body)["reasons"] == ["malformed_request"]


def test_without_a_governor_a_redaction_obligation_is_refused(tmp_path: Path) -> None:
    service = ExternalProcessorService(None)
    _, answer = exchange(service, [headers_message("/v1/chat/completions", context(redact=["EMAIL"])),
                                   ep.ProcessingRequest(request_body=ep.HttpBody(body=CHAT.encode()))])
    assert answer.immediate_response.status.code == 403
    assert json.loads(answer.immediate_response.body)["reasons"] == ["redaction_unavailable"]


def test_tools_list_is_filtered_in_a_buffered_json_answer(tmp_path: Path) -> None:
    service = ExternalProcessorService(governor(tmp_path))
    listing = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": n} for n in ("crm.query", "crm.export",
                                                                                      "web.search", "shell.run")]}}
    answers = exchange(service, [
        headers_message("/mcp", context("tool.list", "tools/list", protocol="mcp")),
        response_headers("application/json"),
        ep.ProcessingRequest(response_body=ep.HttpBody(body=json.dumps(listing).encode(), end_of_stream=True))])
    assert answers[1].mode_override.response_body_mode == 2  # BUFFERED: a verdict needs the whole answer
    assert "content-length" in answers[1].response_headers.response.header_mutation.remove_headers
    body = json.loads(answers[2].response_body.response.body_mutation.body)
    assert [t["name"] for t in body["result"]["tools"]] == ["crm.query", "web.search"]


def test_a_listing_too_large_to_filter_is_withheld_as_a_hook_failure(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agentgov.engine.hooks.tool_filter.MAX_BODY_BYTES", 1000)
    service = ExternalProcessorService(governor(tmp_path))
    listing = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": f"t{i}"} for i in range(200)]}}
    answers = exchange(service, [
        headers_message("/mcp", context("tool.list", "tools/list", protocol="mcp")),
        response_headers("application/json"),
        ep.ProcessingRequest(response_body=ep.HttpBody(body=json.dumps(listing).encode(), end_of_stream=True))])
    immediate = answers[2].immediate_response
    assert immediate.status.code == 503  # fail closed as any hook failure, never a partial list
    assert json.loads(immediate.body)["reasons"] == ["hook_error"]


def test_a_response_without_what_ext_authz_decided_is_withheld(tmp_path: Path) -> None:
    """No metadata (Envoy not forwarding it, or a misconfigured chain): judged as an anonymous caller,
    which the policy refuses, so nothing passes uninspected."""
    service = ExternalProcessorService(governor(tmp_path))
    result = {"jsonrpc": "2.0", "id": 9, "result": {"content": [{"type": "text", "text": "owner: kim@acme.io"}]}}
    answers = exchange(service, [headers_message("/crm/mcp", None), response_headers("application/json"),
                                 ep.ProcessingRequest(response_body=ep.HttpBody(body=json.dumps(result).encode(),
                                                                                end_of_stream=True))])
    blocked = answers[2].immediate_response
    assert blocked.status.code == 200
    assert json.loads(blocked.body)["error"]["data"]["reasons"] == ["unauthenticated"]


def test_an_error_response_from_the_backend_is_not_inspected(tmp_path: Path) -> None:
    service = ExternalProcessorService(governor(tmp_path))
    answers = exchange(service, [headers_message("/mcp", context("tool.call", "crm.query", protocol="mcp")),
                                 response_headers("application/json", status=500)])
    assert not answers[1].HasField("mode_override")


def test_a_processor_that_fails_fails_closed_with_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gov = governor(tmp_path)

    async def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(gov.exchange, "ask", explode)
    service = ExternalProcessorService(gov)
    result = {"jsonrpc": "2.0", "id": 9, "result": {"content": [{"type": "text", "text": "owner: kim@acme.io"}]}}
    answers = exchange(service, [headers_message("/mcp", context("tool.call", "crm.query", protocol="mcp")),
                                 response_headers("application/json"),
                                 ep.ProcessingRequest(response_body=ep.HttpBody(body=json.dumps(result).encode(),
                                                                                end_of_stream=True))])
    assert answers[-1].immediate_response.status.code == 503


def test_the_data_api_hands_redaction_obligations_to_its_caller(tmp_path: Path) -> None:
    gov = governor(tmp_path, ext_proc=False)
    token_free = Envelope("POST", "/v1/chat/completions", "llm", {}, CHAT.encode())
    verdict = asyncio.run(gov.decide(token_free))
    assert verdict.decision.status == 401  # identity off: the policy still wants a caller
    assert "unauthenticated" in verdict.decision.reasons
    stated = {"subject": ALICE, "action": {"kind": "llm.chat", "name": "gpt-4o-mini"},
              "resource": {"type": "model", "id": "gpt-4o-mini"},
              "arguments": {"model": "gpt-4o-mini", "max_tokens": 64},
              "pii": {"findings": [{"type": "EMAIL", "count": 1, "path": "messages[0].content"}]}}
    answer = asyncio.run(gov.decide_stated(stated))
    assert answer.decision.obligations.redact == ("EMAIL",)  # the Data API hands obligations to its caller


def test_opa_envoy_policies_see_findings_under_input_agentgov(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "authz.rego").write_text('package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\n'
                                       'allow if count(input.agentgov.pii.secrets) == 0\n')
    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"policy": {"paths": [str(folder)], "input_format": "opa-envoy"},
                                "identity": {"required": False}}))
    gov = build_governor(load_config(path))
    clean = Envelope("POST", "/api", "h", {"content-type": "application/json"}, b'{"q": "hello"}')
    leaky = Envelope("POST", "/api", "h", {"content-type": "application/json"}, b'{"q": "AKIAQ7RZ3KXW5MN2PL4T"}')
    assert asyncio.run(gov.decide(clean)).decision.allow
    verdict = asyncio.run(gov.decide(leaky))
    assert not verdict.decision.allow
    assert verdict.inputs[0]["agentgov"]["pii"]["secrets"] == ["AWS_KEY"]
    assert "parsed_body" in verdict.inputs[0]  # the plugin's own shape is unchanged


def test_a_request_with_more_text_than_agentgov_inspects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False},
                                "pii": {"max_scan_chars": 100}}))
    gov = build_governor(load_config(path))
    big = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 200}]}).encode()
    verdict = asyncio.run(gov.decide(Envelope("POST", "/v1/chat/completions", "llm", {}, big)))
    assert (verdict.decision.status, verdict.decision.reasons) == (413, ("scan_limit_exceeded",))
