"""Envoy ext_authz (`envoy.service.auth.v3.Authorization/Check`) over the runner.

An unexpected exception in this adapter is the error table's `internal` row (503, fail closed),
with a decision id the operator can find in the log and the audit log. Raw tokens and bodies are
never logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.protobuf.json_format import MessageToDict

from agentgov.engine.errors import REASON_INTERNAL, Failure
from agentgov.engine.metrics import DECISIONS, LATENCY, count_decision
from agentgov.engine.pipeline import Decider, Envelope
from agentgov.engine.server.failures import door_failed
from agentgov.engine.server.responses import verdict_response

log = logging.getLogger("agentgov.ext_authz")
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
_LATENCY = LATENCY.labels(api="ext_authz")


def envelope_from_check(request: authz.CheckRequest, *, with_attributes: bool = False) -> Envelope:
    """The transport facts of a CheckRequest. The full attributes (protojson, as the OPA-Envoy plugin
    gives them to policies) are converted only when asked for: that conversion is the costly part."""
    attributes = request.attributes
    http = attributes.request.http
    headers = {k.lower(): v for k, v in http.headers.items()}
    body = http.raw_body if http.raw_body else http.body.encode("utf-8")
    converted: dict[str, Any] | None = None
    if with_attributes:
        converted = MessageToDict(attributes)
        filter_metadata = converted.get("metadataContext", {}).get("filterMetadata", {})
    else:
        filter_metadata = {ns: MessageToDict(st) for ns, st in attributes.metadata_context.filter_metadata.items()}
    return Envelope(
        method=http.method.upper(),
        path=http.path,
        host=http.host,
        headers=headers,
        body=body,
        body_truncated=headers.get(PARTIAL_BODY_HEADER, "").lower() == "true",
        source_ip=request.attributes.source.address.socket_address.address,
        request_id=http.id,
        envoy_attributes=converted,
        filter_metadata=filter_metadata,
    )


class AuthorizationService(authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, decider: Decider, *, exchange: bool = False) -> None:
        self.decider = decider
        self.exchange = exchange  # Envoy runs ext_proc after us: hand it the exchange's context

    async def Check(self, request: authz.CheckRequest, context: grpc.aio.ServicerContext) -> authz.CheckResponse:
        started = time.perf_counter()
        try:
            env = envelope_from_check(request, with_attributes=self.decider.wants_envoy_attributes)
            verdict = await self.decider.decide(env)
            response = verdict_response(verdict, env.headers.keys(), exchange=self.exchange)
            remaining = context.time_remaining() if context is not None else None
            if remaining is not None and remaining <= 0:
                # Envoy gave up waiting and answered 503 itself: this was not an allow, whatever we decided.
                DECISIONS.labels(api="ext_authz", outcome=Failure.LATE.answer.outcome,
                                 reason="deadline_exceeded").inc()
                log.warning("decision %s finished after Envoy's deadline; Envoy answered 503", verdict.decision_id)
                _LATENCY.observe(time.perf_counter() - started)
                return response
            count_decision("ext_authz", verdict.decision)
            if verdict.decision.errors:
                log.warning("decision %s: %s", verdict.decision_id, "; ".join(verdict.decision.errors))
            # No per-decision info line: the audit log is the record of decisions (docs/audit.md).
        except Exception:
            verdict = await door_failed("ext_authz", Failure.INTERNAL, REASON_INTERNAL, local=self.decider.local)
            response = verdict_response(verdict, ())
        _LATENCY.observe(time.perf_counter() - started)
        return response
