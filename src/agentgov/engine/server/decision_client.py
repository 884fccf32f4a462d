"""An ext_authz server that delegates every decision to a remote `agentgov.v1.DecisionService`.

So enforcement points (next to Envoy) scale apart from decision points (with the policies). The
target is any gRPC target string: `host:port`, `dns:///name:port` (round robin across the
addresses), or `unix:/path`. Fail closed: an unreachable, slow or broken decision service is a
503 deny, never an allow.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import grpc

from agentgov.engine.errors import REASON_UNAVAILABLE, Failure
from agentgov.engine.model import ANONYMOUS, Decision
from agentgov.engine.pipeline import Envelope, Verdict
from agentgov.engine.proto import DECIDE
from agentgov.engine.proto import decision_pb2 as pb
from agentgov.engine.server.decision_codec import http_from_envelope, verdict_from_response

log = logging.getLogger("agentgov.decision_client")


@dataclass(frozen=True)
class RemoteTLS:
    ca: bytes
    cert: bytes | None = None  # client certificate for mTLS
    key: bytes | None = None


class RemoteDecider:
    """A `Decider` whose decisions are made elsewhere: it has no local runner (`local` is None), so
    the worker serves ext_authz only."""

    wants_envoy_attributes = True  # the remote may run OPA-Envoy compatibility mode or read MCP metadata
    local = None

    def __init__(self, target: str, *, timeout_s: float = 0.4, tls: RemoteTLS | None = None) -> None:
        self.target = target
        self.timeout_s = timeout_s
        options = [("grpc.lb_policy_name", "round_robin"), ("grpc.enable_retries", 0)]
        if tls is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                                 certificate_chain=tls.cert)
            self._channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._decide = self._channel.unary_unary(DECIDE, request_serializer=pb.DecideRequest.SerializeToString,
                                                 response_deserializer=pb.DecideResponse.FromString)

    async def decide(self, env: Envelope) -> Verdict:
        request = pb.DecideRequest(http=http_from_envelope(env))
        try:
            response = await self._decide(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            decision_id = uuid.uuid4().hex
            detail = f"decision service {self.target}: {exc.code().name}: {exc.details()}"
            log.warning("decision %s denied with 503: %s", decision_id, detail)
            return Verdict(Decision.failed(Failure.UNAVAILABLE, REASON_UNAVAILABLE, engine="remote", error=detail),
                           ANONYMOUS, decision_id)
        return verdict_from_response(response)

    async def start(self) -> None:
        """Nothing to start: the channel connects on first use."""

    async def close(self) -> None:
        await self._channel.close()
