"""The one place the order of a decision lives: identity → protocol → policy → obligations.

Adapters hand over an `Envelope` (transport facts) and get back a `Verdict`. Nothing here knows
Envoy or gRPC; nothing here turns an unexpected exception into a status: that is server/'s job.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.hooks.identity import IdentityError, IdentityVerifier
from agentgov.engine.model import (
    ANONYMOUS,
    STATUS_FORBIDDEN,
    STATUS_OK,
    STATUS_UNAUTHENTICATED,
    Action,
    AgentRequest,
    Decision,
    Obligations,
    Resource,
    Subject,
)
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.classify import classify

STATUS_BAD_REQUEST = 400
STATUS_TOO_LARGE = 413
# Never handed to policy: credentials, and agentgov's own headers (which only agentgov may set).
_HIDDEN_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
JUSTIFICATION_HEADER = "x-agentgov-justification"


@dataclass(frozen=True)
class Envelope:
    method: str
    path: str
    host: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    body_truncated: bool = False
    source_ip: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    subject: Subject
    decision_id: str
    inputs: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@dataclass
class GovernorOptions:
    allow_truncated_body: bool = False
    can_redact: bool = False  # true once a body-rewriting enforcement point (ext_proc) is configured
    mcp_paths: tuple[str, ...] = ()


class Governor:
    def __init__(self, backend: DecisionBackend, identity: IdentityVerifier | None,
                 options: GovernorOptions | None = None) -> None:
        self.backend = backend
        self.identity = identity
        self.options = options or GovernorOptions()

    async def decide(self, env: Envelope) -> Verdict:
        decision_id = uuid.uuid4().hex
        try:
            subject = self._identify(env)
        except IdentityError as exc:
            return Verdict(Decision.deny(exc.reason, status=STATUS_UNAUTHENTICATED, error=exc.detail),
                           ANONYMOUS, decision_id)
        if env.body_truncated and not self.options.allow_truncated_body:
            return Verdict(Decision.deny("body_truncated", status=STATUS_TOO_LARGE,
                                         error="request body exceeds the inspection limit"), subject, decision_id)
        try:
            actions = classify(env.method, env.path, env.host, env.body, self.options.mcp_paths)
        except ProtocolError as exc:
            return Verdict(Decision.deny("malformed_request", status=STATUS_BAD_REQUEST, error=str(exc)),
                           subject, decision_id)
        inputs: list[dict[str, Any]] = []
        decisions: list[Decision] = []
        for parsed in actions:
            request = AgentRequest(
                subject=subject,
                action=Action(parsed.kind, parsed.name),
                resource=Resource(parsed.resource_type, parsed.resource_id, env.host or None),
                arguments=parsed.arguments,
                context=self._context(env, decision_id),
                http={"method": env.method, "path": env.path, "host": env.host,
                      "headers": {k: v for k, v in env.headers.items()
                                  if k not in _HIDDEN_HEADERS and not k.startswith("x-agentgov-")}},
            )
            policy_input = request.to_input()
            inputs.append(policy_input)
            decision = await self.backend.evaluate(policy_input)
            decisions.append(decision)
            if not decision.allow:
                break
        return Verdict(self._combine(decisions), subject, decision_id, tuple(inputs))

    def _identify(self, env: Envelope) -> Subject:
        if self.identity is None:
            return ANONYMOUS
        return self.identity.verify_header(env.headers.get("authorization"))

    @staticmethod
    def _context(env: Envelope, decision_id: str) -> dict[str, Any]:
        ctx = {"time": datetime.now(UTC).isoformat(), "request_id": env.request_id or decision_id,
               "source_ip": env.source_ip}
        justification = env.headers.get(JUSTIFICATION_HEADER, "").strip()
        if justification:
            ctx["justification"] = justification[:500]
        for key, header in (("agent", "x-agent-id"), ("session", "mcp-session-id")):
            if env.headers.get(header):
                ctx[key] = env.headers[header][:200]
        return ctx

    def _combine(self, decisions: list[Decision]) -> Decision:
        """A batch is allowed only if every action is; the first deny is the answer."""
        for d in decisions:
            if not d.allow:
                return d
        redact = sorted({t for d in decisions for t in d.obligations.redact})
        if redact and not self.options.can_redact:
            # An obligation no enforcement point here can carry out: refuse rather than leak.
            return Decision.deny("redaction_unavailable", status=STATUS_FORBIDDEN,
                                 error=f"policy requires redacting {redact} but no body rewriting is configured")
        headers: dict[str, str] = {}
        for d in decisions:
            headers.update(d.obligations.headers)
        reasons = tuple(dict.fromkeys(r for d in decisions for r in d.reasons))
        first = decisions[0]
        return replace(first, allow=True, reasons=reasons, status=STATUS_OK,
                       obligations=Obligations(redact=tuple(redact), headers=headers))
