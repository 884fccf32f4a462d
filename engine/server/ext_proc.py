"""Envoy ext_proc (`envoy.service.ext_proc.v3.ExternalProcessor/Process`): meter LLM token usage
from responses as they stream back, attributed to the caller agentgov authorized.

ext_authz decides before the request leaves; only ext_proc sees the answer. For each LLM call the
processor reads the identity headers ext_authz set (`x-agentgov-subject`, `-tenant`,
`-decision-id`), streams the response body through a `UsageMeter` without holding it back, and
records the tokens used. Other requests are released at once: the processor asks Envoy (mode
override) not to send their bodies. Bodies are never modified here; redaction will be.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from agentgov.engine.metrics import TOKENS, UNMETERED
from agentgov.engine.protocols.llm import LLM_PATHS
from agentgov.engine.protocols.usage import Usage, UsageMeter

log = logging.getLogger("agentgov.ext_proc")
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_SKIP_RESPONSE = mode_pb2.ProcessingMode(response_header_mode=mode_pb2.ProcessingMode.SKIP,
                                         response_body_mode=mode_pb2.ProcessingMode.NONE)


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

    @property
    def metered(self) -> bool:
        return self.path.split("?", 1)[0] in LLM_PATHS


def _header_map(headers: base_pb2.HeaderMap) -> dict[str, str]:
    """Envoy sends `raw_value` bytes (newer) or `value` (older): read either."""
    out: dict[str, str] = {}
    for h in headers.headers:
        out[h.key.lower()] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


class ExternalProcessorService(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    async def Process(self, request_iterator: AsyncIterator[ep.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = _Exchange()
        async for request in request_iterator:
            yield self._answer(exchange, request)
        if not exchange.done and exchange.meter is not None:
            # The stream ended without end_of_stream (client went away): count what was seen.
            self._record(exchange)

    def _answer(self, exchange: _Exchange, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        which = request.WhichOneof("request")
        if which == "request_headers":
            headers = _header_map(request.request_headers.headers)
            exchange.path = headers.get(":path", "")
            exchange.decision_id = headers.get("x-agentgov-decision-id", "")
            exchange.subject = headers.get("x-agentgov-subject", "")
            exchange.tenant = headers.get("x-agentgov-tenant", "")
            response = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
            if not exchange.metered:
                response.mode_override.CopyFrom(_SKIP_RESPONSE)
            return response
        if which == "response_headers":
            headers = _header_map(request.response_headers.headers)
            exchange.status = headers.get(":status", "")
            if exchange.metered and exchange.status.startswith("2"):
                exchange.meter = UsageMeter(headers.get("content-type", ""))
                if request.response_headers.end_of_stream:
                    self._record(exchange)
            return ep.ProcessingResponse(response_headers=ep.HeadersResponse())
        if which == "response_body":
            if exchange.meter is not None and not exchange.done:
                exchange.meter.feed(request.response_body.body)
                if request.response_body.end_of_stream:
                    self._record(exchange)
            return ep.ProcessingResponse(response_body=ep.BodyResponse())
        if which == "request_body":
            return ep.ProcessingResponse(request_body=ep.BodyResponse())
        if which == "request_trailers":
            return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
        return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())

    @staticmethod
    def _record(exchange: _Exchange) -> None:
        exchange.done = True
        usage: Usage | None = exchange.meter.finish() if exchange.meter is not None else None
        tenant = exchange.tenant or "-"
        if usage is None:
            # Streams without usage (OpenAI without stream_options.include_usage) cannot be counted:
            # say so, so an operator sees unmetered traffic instead of zeros.
            UNMETERED.labels(tenant=tenant).inc()
            log.warning("usage unknown decision=%s subject=%s path=%s", exchange.decision_id or "-",
                        exchange.subject or "-", exchange.path.split("?", 1)[0])
            return
        model = usage.model or "-"
        TOKENS.labels(tenant=tenant, model=model, direction="input").inc(usage.input_tokens)
        TOKENS.labels(tenant=tenant, model=model, direction="output").inc(usage.output_tokens)
        log.info("usage decision=%s subject=%s model=%s input_tokens=%d output_tokens=%d",
                 exchange.decision_id or "-", exchange.subject or "-", model, usage.input_tokens,
                 usage.output_tokens)
