"""Envoy ext_proc (`envoy.service.ext_proc.v3.ExternalProcessor/Process`): the later stages of an
exchange ext_authz allowed. The Governor decides; this adapter only moves bytes and headers.

- request body: carries out the policy's `redact` obligation (the Governor's rewrite hooks) before
  the body reaches the backend; content-length follows the new body.
- response: runs the Governor's response processors (the PII hook judges tool results and model
  output by the same policy; the tools_list hook filters `tools/list`), buffered for JSON and as it
  streams for server-sent events; and meters LLM token usage as before.

What ext_authz decided reaches this processor as dynamic metadata (namespace
`envoy.filters.http.ext_authz`, key `agentgov`, forwarded by the filter's `metadata_options`): the
decision id, the subject, the actions and the redaction obligation. Envoy strips anything a client
sends that looks like it, so it cannot be forged. A stream with no such metadata on an inspected
path is refused (fail closed), never passed uninspected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf.json_format import MessageToDict

from agentgov.engine.errors import REASON_INTERNAL, Failure
from agentgov.engine.hooks.base import BodyVerdict, ResponseProcessor
from agentgov.engine.metrics import RESPONSES, TOKENS, UNMETERED
from agentgov.engine.model import Decision, Obligations, Subject
from agentgov.engine.pipeline import Governor
from agentgov.engine.pipeline.offered import REASON as REASON_TOOL
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.llm import LLM_PATHS, without_tools
from agentgov.engine.protocols.parsed import ParsedAction
from agentgov.engine.protocols.usage import Usage, UsageMeter
from agentgov.engine.server.exchange import EXT_AUTHZ_NAMESPACE, read_exchange

log = logging.getLogger("agentgov.ext_proc")
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_MODE = mode_pb2.ProcessingMode
_SKIP_RESPONSE = _MODE(response_header_mode=_MODE.SKIP, response_body_mode=_MODE.NONE)
# Actions whose answers carry data worth inspecting (tool results, resources, prompts, model output).
_INSPECTED_KINDS = {"llm.chat", "tool.call", "tool.list", "resource.read", "prompt.get"}


@dataclass
class _Exchange:
    """What one request/response pair has told the processor so far."""

    decision_id: str = ""
    subject: str = ""
    tenant: str = ""
    path: str = ""
    status: str = ""
    meter: UsageMeter | None = None
    done: bool = False
    context: Mapping[str, Any] | None = None  # what ext_authz decided (dynamic metadata)
    redact: tuple[str, ...] = ()
    remove_tools: tuple[str, ...] = ()  # offered tools the caller may not call: out of the body
    processors: list[tuple[str, ResponseProcessor]] = field(default_factory=list)
    blocked: bool = False
    inspected: bool = False

    @property
    def metered(self) -> bool:
        return self.path.split("?", 1)[0] in LLM_PATHS


def _body_replaced(body: bytes) -> ep.ProcessingResponse:
    """The request body replaced (its length with it), as Envoy forwards it to the backend."""
    common = ep.CommonResponse(
        header_mutation=ep.HeaderMutation(set_headers=[_set_header("content-length", str(len(body)))]),
        body_mutation=ep.BodyMutation(body=body))
    return ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))


def _header_map(headers: base_pb2.HeaderMap) -> dict[str, str]:
    """Envoy sends `raw_value` bytes (newer) or `value` (older): read either."""
    out: dict[str, str] = {}
    for h in headers.headers:
        out[h.key.lower()] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def _exchange_context(request: ep.ProcessingRequest) -> Mapping[str, Any] | None:
    namespaces = request.metadata_context.filter_metadata
    if EXT_AUTHZ_NAMESPACE not in namespaces:
        return None
    return read_exchange(MessageToDict(namespaces[EXT_AUTHZ_NAMESPACE]))


def _set_header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, raw_value=value.encode()),
                                      append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


def _immediate(status: int, body: bytes, decision_id: str) -> ep.ProcessingResponse:
    headers = ep.HeaderMutation(set_headers=[_set_header("content-type", "application/json"),
                                             _set_header("x-agentgov-decision-id", decision_id)])
    return ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status), headers=headers, body=body,
        details="agentgov_response_policy"))


def _refused(failure: Failure, reason: str, decision_id: str, detail: str = "") -> ep.ProcessingResponse:
    """ext_proc's answer for a failure category of the error table: an immediate response."""
    body = json.dumps({"error": failure.answer.error, "reasons": [reason], "decision_id": decision_id,
                       "detail": detail}).encode()
    return _immediate(failure.status, body, decision_id)


class ExternalProcessorService(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, governor: Governor | None = None) -> None:
        # ext_proc's stages of the exchange (the runner's, beside it); None on a delegating edge: metering only.
        self.stages = governor.exchange if governor is not None else None

    async def Process(self, request_iterator: AsyncIterator[ep.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = _Exchange()
        async for request in request_iterator:
            try:
                yield await self._answer(exchange, request)
            except Exception:
                # Fail closed: a processor that cannot judge a body does not let it through.
                log.exception("ext_proc error on decision %s; answering %d", exchange.decision_id or "-",
                              Failure.INTERNAL.status)
                RESPONSES.labels(outcome="error", reason=REASON_INTERNAL).inc()
                await self._audit_failure(exchange)
                yield _refused(Failure.INTERNAL, REASON_INTERNAL, exchange.decision_id)
                return
        if not exchange.done and exchange.meter is not None:
            # The stream ended without end_of_stream (client went away): count what was seen.
            await self._settle(exchange, self._record(exchange))

    async def _answer(self, exchange: _Exchange, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        which = request.WhichOneof("request")
        if which == "request_headers":
            return self._request_headers(exchange, request)
        if which == "request_body":
            return self._request_body(exchange, request.request_body)
        if which == "response_headers":
            return await self._response_headers(exchange, request.response_headers)
        if which == "response_body":
            return await self._response_body(exchange, request.response_body)
        if which == "request_trailers":
            return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
        return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())

    # --- request ----------------------------------------------------------------------------------

    def _request_headers(self, exchange: _Exchange, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        headers = _header_map(request.request_headers.headers)
        exchange.path = headers.get(":path", "")
        exchange.decision_id = headers.get("x-agentgov-decision-id", "")
        exchange.subject = headers.get("x-agentgov-subject", "")
        exchange.tenant = headers.get("x-agentgov-tenant", "")
        exchange.context = _exchange_context(request)
        if exchange.context is not None:
            exchange.redact = tuple(str(t) for t in exchange.context.get("redact", []))
            exchange.remove_tools = tuple(str(t) for t in exchange.context.get("remove_tools") or [])
        response = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
        inspect = self._inspects(exchange)
        mode = _MODE()
        if exchange.redact or exchange.remove_tools:
            mode.request_body_mode = _MODE.BUFFERED
        if not inspect and not exchange.metered:
            mode.response_header_mode = _MODE.SKIP
            mode.response_body_mode = _MODE.NONE
        if mode.ByteSize():
            response.mode_override.CopyFrom(mode)
        return response

    def _inspects(self, exchange: _Exchange) -> bool:
        if self.stages is None or not self.stages.inspects_responses:
            return False
        actions = (exchange.context or {}).get("actions")
        if actions is None:
            # ext_authz said nothing: inspect anything that looks like an agent protocol (fail closed).
            bare = exchange.path.split("?", 1)[0]
            return bare in LLM_PATHS or bare.rstrip("/").endswith("/mcp")
        return any(isinstance(a, dict) and a.get("kind") in _INSPECTED_KINDS for a in actions)

    def _request_body(self, exchange: _Exchange, body: ep.HttpBody) -> ep.ProcessingResponse:
        response = ep.ProcessingResponse(request_body=ep.BodyResponse())
        original = body.body
        if exchange.remove_tools:
            try:
                without = without_tools(exchange.path.split("?", 1)[0], original, exchange.remove_tools)
            except ProtocolError as exc:
                RESPONSES.labels(outcome="blocked", reason=REASON_TOOL).inc()
                return _refused(Failure.FORBIDDEN, REASON_TOOL, exchange.decision_id, str(exc))
            RESPONSES.labels(outcome="rewritten", reason="remove_tools").inc()
            if not exchange.redact:
                return _body_replaced(without)
            original = without
        if not exchange.redact:
            return response
        if self.stages is None or not self.stages.rewrites_bodies:
            RESPONSES.labels(outcome="blocked", reason="redaction_unavailable").inc()
            return _refused(Failure.FORBIDDEN, "redaction_unavailable", exchange.decision_id,
                            "the policy requires redaction, which is not available here")
        try:
            rewritten = self.stages.rewrite_request(original, exchange.redact)
        except ProtocolError as exc:
            return _refused(Failure.MALFORMED, "malformed_request", exchange.decision_id, str(exc))
        if rewritten is None:
            return response if original is body.body else _body_replaced(original)
        RESPONSES.labels(outcome="redacted", reason="request").inc()
        return _body_replaced(rewritten)

    # --- response ---------------------------------------------------------------------------------

    async def _response_headers(self, exchange: _Exchange, message: ep.HttpHeaders) -> ep.ProcessingResponse:
        headers = _header_map(message.headers)
        exchange.status = headers.get(":status", "")
        status = int(exchange.status) if exchange.status.isdigit() else 0
        if exchange.metered and exchange.status.startswith("2"):
            exchange.meter = UsageMeter(headers.get("content-type", ""))
            if message.end_of_stream:
                await self._settle(exchange, self._record(exchange))
        response = ep.ProcessingResponse(response_headers=ep.HeadersResponse())
        if self.stages is not None and self._inspects(exchange) and not message.end_of_stream:
            subject, actions = self._restore(exchange)
            budget = (exchange.context or {}).get("budget") or {}
            candidates = self.stages.response_processors(exchange.decision_id, exchange.path, subject, actions,
                                                           budget if isinstance(budget, dict) else {})
            exchange.processors = [(n, p) for n, p in candidates if p.on_headers(status, headers)]
        if exchange.processors:
            exchange.inspected = True
            buffered = any(p.wants_buffering for _, p in exchange.processors)
            response.mode_override.CopyFrom(_MODE(response_body_mode=_MODE.BUFFERED if buffered else _MODE.STREAMED))
            # The body may change length: let Envoy frame it (chunked) rather than keep a stale length.
            response.response_headers.response.header_mutation.remove_headers.append("content-length")
        return response

    def _restore(self, exchange: _Exchange) -> tuple[Subject, list[ParsedAction]]:
        """The subject and actions ext_authz decided, from its metadata (anonymous, none: if absent,
        which the policy then refuses, so an unannounced response is withheld, not passed)."""
        ctx = exchange.context or {}
        s = ctx.get("subject") or {}
        subject = Subject(id=str(s.get("id") or "anonymous"), roles=tuple(str(r) for r in s.get("roles") or ()),
                          tenant=s.get("tenant") or None, authenticated=bool(s.get("authenticated", False)))
        actions = [ParsedAction(str(a.get("kind", "")), str(a.get("name", "")), str(a.get("resource_type", "")),
                                str(a.get("resource_id", "")), protocol=str(a.get("protocol", "")))
                   for a in ctx.get("actions") or [] if isinstance(a, dict)]
        if not actions:
            bare = exchange.path.split("?", 1)[0]
            actions = [ParsedAction("http", bare, "route", bare, protocol="mcp" if bare.endswith("/mcp") else "http")]
        return subject, actions

    async def _response_body(self, exchange: _Exchange, message: ep.HttpBody) -> ep.ProcessingResponse:
        chunk, end = message.body, message.end_of_stream
        if exchange.meter is not None and not exchange.done:
            exchange.meter.feed(chunk)  # usage is read from what the backend sent, before any rewrite
            if end:
                await self._settle(exchange, self._record(exchange))
        if not exchange.processors:
            return ep.ProcessingResponse(response_body=ep.BodyResponse())
        if exchange.blocked:
            return self._replace(b"")
        data: bytes = chunk
        for name, processor in exchange.processors:
            verdict: BodyVerdict = await processor.on_body(data, end)
            if verdict.block:
                exchange.blocked = True
                RESPONSES.labels(outcome="blocked", reason=verdict.reason or name).inc()
                log.warning("response of decision %s withheld by %s: %s", exchange.decision_id or "-", name,
                            verdict.reason or "denied")
                await self._audit(exchange, Decision.deny(verdict.reason or "denied", status=verdict.block_status))
                if processor.wants_buffering:
                    return _immediate(verdict.block_status, verdict.block_body, exchange.decision_id)
                return self._replace(verdict.replace or b"")
            if verdict.replace is not None:
                data = verdict.replace
        if end:
            redacted = sorted({t for _, p in exchange.processors for t in getattr(p, "redacted", ())})
            RESPONSES.labels(outcome="redacted" if redacted else "passed", reason="").inc()
            await self._audit(exchange, Decision(allow=True, reasons=("response_passed",), status=200,
                                                 obligations=Obligations(redact=tuple(redacted))))
        return self._replace(data) if data != chunk else ep.ProcessingResponse(response_body=ep.BodyResponse())

    async def _audit(self, exchange: _Exchange, decision: Decision) -> None:
        """Record what became of the response (the audit hook, when configured) before it goes on."""
        if self.stages is None or not exchange.inspected:
            return
        subject, actions = self._restore(exchange)
        await self.stages.record_response(exchange.decision_id, exchange.path.split("?", 1)[0], subject, actions,
                                            decision)

    async def _audit_failure(self, exchange: _Exchange) -> None:
        """The exchange failed in ext_proc: its response is recorded as refused (never raises)."""
        try:
            await self._audit(exchange, Decision.failed(Failure.INTERNAL, REASON_INTERNAL))
        except Exception:
            log.exception("could not record the failure of decision %s", exchange.decision_id or "-")

    @staticmethod
    def _replace(body: bytes) -> ep.ProcessingResponse:
        return ep.ProcessingResponse(response_body=ep.BodyResponse(
            response=ep.CommonResponse(body_mutation=ep.BodyMutation(body=body))))

    async def _settle(self, exchange: _Exchange, usage: Usage | None) -> None:
        """Hand the usage (or its absence) to the Governor: the budget hook settles its reservation."""
        if self.stages is None or not exchange.decision_id:
            return
        model = usage.model if usage is not None else ""
        await self.stages.settle(exchange.decision_id, exchange.tenant, model,
                                   usage.input_tokens if usage else None, usage.output_tokens if usage else None)

    @staticmethod
    def _record(exchange: _Exchange) -> Usage | None:
        exchange.done = True
        usage: Usage | None = exchange.meter.finish() if exchange.meter is not None else None
        tenant = exchange.tenant or "-"
        if usage is None:
            # Streams without usage (OpenAI without stream_options.include_usage) cannot be counted:
            # say so, so an operator sees unmetered traffic instead of zeros.
            UNMETERED.labels(tenant=tenant).inc()
            log.warning("usage unknown decision=%s subject=%s path=%s", exchange.decision_id or "-",
                        exchange.subject or "-", exchange.path.split("?", 1)[0])
            return None
        model = usage.model or "-"
        TOKENS.labels(tenant=tenant, model=model, direction="input").inc(usage.input_tokens)
        TOKENS.labels(tenant=tenant, model=model, direction="output").inc(usage.output_tokens)
        log.info("usage decision=%s subject=%s model=%s input_tokens=%d output_tokens=%d",
                 exchange.decision_id or "-", exchange.subject or "-", model, usage.input_tokens,
                 usage.output_tokens)
        return usage
