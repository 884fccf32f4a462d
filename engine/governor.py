"""The one place the order of a decision lives: identity → protocol → policy → obligations.

Adapters hand over an `Envelope` (transport facts) and get back a `Verdict`. Nothing here knows
Envoy or gRPC; nothing here turns an unexpected exception into a status: that is server/'s job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.hooks.identity import IdentityError, IdentityVerifier
from agentgov.engine.metrics import STAGE_LATENCY
from agentgov.engine.model import (
    ANONYMOUS,
    STATUS_FORBIDDEN,
    STATUS_OK,
    STATUS_RATE_LIMITED,
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
from agentgov.engine.protocols.opa_envoy import opa_envoy_input
from agentgov.engine.protocols.parsed import ParsedAction

STATUS_BAD_REQUEST = 400
STATUS_TOO_LARGE = 413
# Never handed to policy: credentials, and agentgov's own headers (which only agentgov may set).
_HIDDEN_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
JUSTIFICATION_HEADER = "x-agentgov-justification"
# Request headers that fill `context.<key>` in the policy input (the justification is read apart: it is longer).
CONTEXT_HEADERS = {"agent": "x-agent-id", "session": "mcp-session-id"}


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
    # Envoy's CheckRequest attributes (protojson), when an ext_authz server forwards them.
    envoy_attributes: Mapping[str, Any] | None = None
    # Envoy dynamic metadata by filter namespace (e.g. the MCP filter's parsed JSON-RPC message).
    filter_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    subject: Subject
    decision_id: str
    inputs: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    retry_after_s: int | None = None  # for a 429: when the caller may try again
    action: str = ""  # what was decided, for logs: "tool.call crm.query"
    # Headers that carried an agentgov-only credential (an API key): removed before the backend.
    consumed_headers: tuple[str, ...] = ()


InputFormat = Literal["agentgov", "opa-envoy"]
INPUT_FORMATS: tuple[str, ...] = ("agentgov", "opa-envoy")
MCP_FILTER_NAMESPACE = "envoy.filters.http.mcp"
_IDENTITY_STAGE = STAGE_LATENCY.labels(stage="identity")
_PARSE_STAGE = STAGE_LATENCY.labels(stage="parse")
_POLICY_STAGE = STAGE_LATENCY.labels(stage="policy")


@dataclass
class GovernorOptions:
    allow_truncated_body: bool = False
    can_redact: bool = False  # true once a body-rewriting enforcement point (ext_proc) is configured
    mcp_paths: tuple[str, ...] = ()
    # "opa-envoy": policies get the OPA-Envoy plugin's input and answer in its result shapes.
    input_format: InputFormat = "agentgov"


class Decider(Protocol):
    """What an enforcement point needs: a Governor here, or a remote decision service."""

    @property
    def wants_envoy_attributes(self) -> bool: ...

    async def decide(self, env: Envelope) -> Verdict: ...

    async def close(self) -> None: ...


class Governor:
    def __init__(self, backend: DecisionBackend, identity: IdentityVerifier | None,
                 options: GovernorOptions | None = None) -> None:
        self.backend = backend
        self.identity = identity
        self.options = options or GovernorOptions()
        self._hidden = _HIDDEN_HEADERS | ({identity.api_key_header} if identity else set())

    @property
    def wants_envoy_attributes(self) -> bool:
        return self.options.input_format == "opa-envoy"

    async def close(self) -> None:
        await self.backend.close()

    async def decide(self, env: Envelope) -> Verdict:
        """An HTTP request as an enforcement point saw it: parse the protocol, then decide each action."""
        return await self._decide(env, None)

    async def decide_action(self, env: Envelope, action: ParsedAction) -> Verdict:
        """An action a caller described itself (the decision service's ActionRequest): no body to parse."""
        return await self._decide(env, [action])

    async def _decide(self, env: Envelope, given: Sequence[ParsedAction] | None) -> Verdict:
        decision_id = uuid.uuid4().hex
        started = time.perf_counter()
        try:
            subject = self._identify(env)
        except IdentityError as exc:
            return Verdict(Decision.deny(exc.reason, status=STATUS_UNAUTHENTICATED, error=exc.detail),
                           ANONYMOUS, decision_id)
        finally:
            started = _observe(_IDENTITY_STAGE, started)
        if env.body_truncated and not self.options.allow_truncated_body:
            return Verdict(Decision.deny("body_truncated", status=STATUS_TOO_LARGE,
                                         error="request body exceeds the inspection limit",
                                         detail="the request body exceeds the inspection limit"),
                           subject, decision_id)
        if self.options.input_format == "opa-envoy" and given is None:
            return await self._decide_opa_envoy(env, subject, decision_id, started)
        try:
            actions = list(given) if given is not None else classify(
                env.method, env.path, env.host, env.body, self.options.mcp_paths,
                mcp_metadata=env.filter_metadata.get(MCP_FILTER_NAMESPACE))
        except ProtocolError as exc:
            return Verdict(_malformed(exc), subject, decision_id)
        finally:
            started = _observe(_PARSE_STAGE, started)
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
                                  if k not in self._hidden and not k.startswith("x-agentgov-")}},
            )
            policy_input = request.to_input()
            inputs.append(policy_input)
            decision = await self.backend.evaluate(policy_input)
            decisions.append(decision)
            if not decision.allow:
                break
        _observe(_POLICY_STAGE, started)
        decision = self._combine(decisions)
        summary = ", ".join(f"{a.kind} {a.name}" for a in actions[:len(decisions)])
        return Verdict(decision, subject, decision_id, tuple(inputs), _retry_after(decision, inputs), summary,
                       _consumed(subject))

    async def _decide_opa_envoy(self, env: Envelope, subject: Subject, decision_id: str, started: float) -> Verdict:
        try:
            policy_input = opa_envoy_input(
                method=env.method, path=env.path, host=env.host, headers=env.headers, body=env.body,
                body_truncated=env.body_truncated, source_ip=env.source_ip, request_id=env.request_id,
                attributes=env.envoy_attributes)
        except ProtocolError as exc:
            return Verdict(_malformed(exc), subject, decision_id)
        finally:
            started = _observe(_PARSE_STAGE, started)
        decision = await self.backend.evaluate(policy_input)
        _observe(_POLICY_STAGE, started)
        # The path without its query string: queries can carry personal data, and this ends up in logs.
        action = f"http {env.method} {env.path.split('?', 1)[0]}"
        return Verdict(decision, subject, decision_id, (policy_input,), action=action, consumed_headers=_consumed(subject))

    def _identify(self, env: Envelope) -> Subject:
        if self.identity is None:
            return ANONYMOUS
        return self.identity.verify_headers(env.headers)

    @staticmethod
    def _context(env: Envelope, decision_id: str) -> dict[str, Any]:
        ctx = {"time": datetime.now(UTC).isoformat(), "request_id": env.request_id or decision_id,
               "source_ip": env.source_ip}
        justification = env.headers.get(JUSTIFICATION_HEADER, "").strip()
        if justification:
            ctx["justification"] = justification[:500]
        for key, header in CONTEXT_HEADERS.items():
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


def _consumed(subject: Subject) -> tuple[str, ...]:
    """An API key is agentgov's credential, not the backend's: the header that carried it goes no further."""
    header = subject.claims.get("credential_header") if subject.claims.get("auth") == "api_key" else None
    return (header,) if isinstance(header, str) else ()


def _malformed(exc: ProtocolError) -> Decision:
    # ProtocolError messages are written for clients (no parser internals): say what was wrong.
    return Decision.deny("malformed_request", status=STATUS_BAD_REQUEST, error=str(exc), detail=str(exc))


def _observe(stage: Any, started: float) -> float:
    now = time.perf_counter()
    stage.observe(now - started)
    return now


def _retry_after(decision: Decision, inputs: list[dict[str, Any]]) -> int | None:
    """Seconds until a rate-limited caller may retry, when the budget figures in the input say."""
    if decision.allow or decision.status != STATUS_RATE_LIMITED or not inputs:
        return None
    budget = inputs[-1].get("budget")
    value = budget.get("retry_after_s") if isinstance(budget, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
