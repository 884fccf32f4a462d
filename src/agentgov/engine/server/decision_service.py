"""`agentgov.v1.DecisionService`: the same Governor that serves Envoy, for callers that are not Envoy.

A policy deny is a normal answer (allow=false, a status, reasons), never a gRPC error; only a
request that names nothing decidable gets INVALID_ARGUMENT. An unexpected failure is a 503 deny
with a decision id the operator can find in the log, exactly as on the ext_authz path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from agentgov.engine.errors import REASON_INTERNAL, Failure
from agentgov.engine.metrics import LATENCY, count_decision
from agentgov.engine.pipeline import Governor
from agentgov.engine.proto import SERVICE
from agentgov.engine.proto import decision_pb2 as pb
from agentgov.engine.server.decision_codec import (
    InvalidRequest,
    action_from_request,
    envelope_from_http,
    response_from_verdict,
)
from agentgov.engine.server.failures import door_failed

log = logging.getLogger("agentgov.decision_service")
MAX_BATCH = 256
_LATENCY = LATENCY.labels(api="decision_service")


class DecisionService:
    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    async def Decide(self, request: pb.DecideRequest, context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        try:
            return await self._decide(request)
        except InvalidRequest as exc:
            await self._invalid(context, str(exc))
            raise  # abort raises; this line only satisfies the type checker

    async def _invalid(self, context: grpc.aio.ServicerContext, why: str) -> None:
        """A request that names nothing decidable: audited as refused, answered with the table's gRPC code."""
        verdict = await door_failed("decision_service", Failure.MALFORMED, "malformed_request", local=self.governor,
                                    why=why)
        await context.abort(grpc.StatusCode[Failure.MALFORMED.answer.grpc_door],
                            f"{why} (decision {verdict.decision_id})")

    async def BatchDecide(self, request: pb.BatchDecideRequest,
                          context: grpc.aio.ServicerContext) -> pb.BatchDecideResponse:
        if len(request.requests) > MAX_BATCH:
            await self._invalid(context, f"at most {MAX_BATCH} requests per batch")
        responses = []
        for index, item in enumerate(request.requests):
            try:
                responses.append(await self._decide(item))
            except InvalidRequest as exc:
                # All or nothing: a caller must not act on part of a batch it got wrong.
                await self._invalid(context, f"requests[{index}]: {exc}")
                raise
        return pb.BatchDecideResponse(responses=responses)

    async def _decide(self, request: pb.DecideRequest) -> pb.DecideResponse:
        started = time.perf_counter()
        which = request.WhichOneof("request")
        if which is None:
            raise InvalidRequest("DecideRequest must carry an `http` request or an `action`")
        if which == "action" and self.governor.options.input_format != "agentgov":
            raise InvalidRequest("this server runs OPA-Envoy compatibility mode: send an `http` request")
        try:
            if which == "http":
                verdict = await self.governor.decide(envelope_from_http(request.http), entry_point="decision_service")
            else:
                env, action = action_from_request(request.action)
                verdict = await self.governor.decide_action(env, action)
        except InvalidRequest:
            raise
        except Exception:
            verdict = await door_failed("decision_service", Failure.INTERNAL, REASON_INTERNAL, local=self.governor)
        count_decision("decision_service", verdict.decision)
        if verdict.decision.errors:
            log.warning("decision %s: %s", verdict.decision_id, "; ".join(verdict.decision.errors))
        response = response_from_verdict(verdict, include_input=request.include_input)
        _LATENCY.observe(time.perf_counter() - started)
        return response


def add_decision_service(server: grpc.aio.Server, service: DecisionService) -> None:
    """Register the two methods by hand (see agentgov.engine.proto for why there is no generated stub)."""
    handlers: dict[str, Any] = {
        "Decide": grpc.unary_unary_rpc_method_handler(
            service.Decide, request_deserializer=pb.DecideRequest.FromString,
            response_serializer=pb.DecideResponse.SerializeToString),
        "BatchDecide": grpc.unary_unary_rpc_method_handler(
            service.BatchDecide, request_deserializer=pb.BatchDecideRequest.FromString,
            response_serializer=pb.BatchDecideResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
