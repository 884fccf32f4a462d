"""The policy stage: build the policy input (one builder per input format) and ask the active set.

Builders, all here so the input contract (docs/input.md) has one home:
- `agentgov_input`: one action of a request the parse stage read (Envoy, the decision service);
- `stated_input`: a document a caller stated whole (OPA's Data API, AuthZEN);
- `opa_envoy_document`: the OPA-Envoy plugin's input, with agentgov's additions under `agentgov`;
- `question_input`: the policy asked about a response or one tool of a listing (ext_proc).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from agentgov.engine.errors import Failure
from agentgov.engine.hooks.base import HookRequest, PolicyQuestion
from agentgov.engine.metrics import STAGE_LATENCY
from agentgov.engine.model import (
    STATUS_OK,
    Action,
    AgentRequest,
    Decision,
    Obligations,
    Resource,
    Subject,
    summarize_findings,
)
from agentgov.engine.pipeline.types import Envelope
from agentgov.engine.protocols.jsonbody import strings_in
from agentgov.engine.protocols.opa_envoy import opa_envoy_input
from agentgov.engine.protocols.parsed import ParsedAction

POLICY_STAGE = STAGE_LATENCY.labels(stage="policy")
JUSTIFICATION_HEADER = "x-agentgov-justification"
# Request headers that fill `context.<key>` in the policy input (the justification is read apart: it is longer).
CONTEXT_HEADERS = {"agent": "x-agent-id", "session": "mcp-session-id"}


def public_extensions(request: HookRequest) -> dict[str, Any]:
    """What hooks added for the policy (`input.hooks`): agentgov's own underscore keys stay out."""
    return {k: v for k, v in request.extensions.items() if not k.startswith("_")}


def request_context(env: Envelope, decision_id: str) -> dict[str, Any]:
    ctx = {"time": datetime.now(UTC).isoformat(), "request_id": env.request_id or decision_id,
           "source_ip": env.source_ip}
    justification = env.headers.get(JUSTIFICATION_HEADER, "").strip()
    if justification:
        ctx["justification"] = justification[:500]
    for key, header in CONTEXT_HEADERS.items():
        if env.headers.get(header):
            ctx[key] = env.headers[header][:200]
    return ctx


def agentgov_inputs(env: Envelope, request: HookRequest, hidden: Collection[str]) -> list[dict[str, Any]]:
    """One input per parsed action, in order (the runner stops at the first deny)."""
    budgets = request.extensions.get("_budget", ())
    extensions = public_extensions(request)
    context = request_context(env, request.decision_id)
    http = {"method": env.method, "path": env.path, "host": env.host,
            "headers": {k: v for k, v in env.headers.items() if k not in hidden and not k.startswith("x-agentgov-")}}
    inputs = []
    for i, parsed in enumerate(request.actions):
        inputs.append(AgentRequest(
            subject=request.subject,
            action=Action(parsed.kind, parsed.name),
            resource=Resource(parsed.resource_type, parsed.resource_id, env.host or None),
            arguments=parsed.arguments,
            findings=tuple(request.findings[i]) if i < len(request.findings) else (),
            budget=budgets[i] if i < len(budgets) else {},
            context=dict(context),
            http=http,
            extensions=extensions,
            llm=llm_section(parsed),
        ).to_input())
    return inputs


def llm_section(parsed: ParsedAction) -> dict[str, Any] | None:
    """`input.llm` of an LLM call: the tools it offers the model (each also asked about as a tool.call)."""
    if parsed.kind != "llm.chat":
        return None
    return {"tools": [t.to_input() for t in parsed.tools]}


def stated_action(policy_input: Mapping[str, Any]) -> tuple[ParsedAction, str]:
    """The action a stated input describes (for hooks), and the server it names."""
    action, resource = policy_input.get("action", {}), policy_input.get("resource", {})
    arguments = dict(policy_input.get("arguments") or {})
    parsed = ParsedAction(kind=str(action.get("kind", "")), name=str(action.get("name", "")),
                          resource_type=str(resource.get("type", "")), resource_id=str(resource.get("id", "")),
                          arguments=arguments, texts=tuple(strings_in(arguments, "arguments")), protocol="stated")
    return parsed, str(resource.get("server") or "")


def stated_subject(policy_input: Mapping[str, Any]) -> Subject:
    s = policy_input.get("subject") or {}
    return Subject(id=str(s.get("id") or "anonymous"), roles=tuple(s.get("roles") or ()), tenant=s.get("tenant"),
                   claims=dict(s.get("claims") or {}), authenticated=bool(s.get("authenticated", False)))


def stated_input(policy_input: Mapping[str, Any], request: HookRequest) -> dict[str, Any]:
    """The caller's document, with what the hooks found merged in (never replacing what was stated)."""
    document = dict(policy_input)
    stated = list(policy_input.get("pii", {}).get("findings", []))
    found = [f.to_input() for f in (request.findings[0] if request.findings else ())]
    document["pii"] = summarize_findings(stated + [f for f in found if f not in stated])
    extensions = public_extensions(request)
    budget = (request.extensions.get("_budget") or [{}])[0]
    if budget:
        document["budget"] = {**budget, **dict(policy_input.get("budget") or {})}
    if extensions:
        document["hooks"] = extensions
    return document


def opa_envoy_document(env: Envelope) -> dict[str, Any]:
    """The OPA-Envoy plugin's input. Raises ProtocolError for a body that does not parse."""
    return opa_envoy_input(method=env.method, path=env.path, host=env.host, headers=env.headers, body=env.body,
                           body_truncated=env.body_truncated, source_ip=env.source_ip, request_id=env.request_id,
                           attributes=env.envoy_attributes)


def with_agentgov_section(policy_input: dict[str, Any], request: HookRequest) -> dict[str, Any]:
    """OPA-Envoy inputs keep the plugin's shape; what agentgov's hooks add goes under `input.agentgov`
    (a key the plugin never sets), so existing policies run unchanged and new ones can read it."""
    findings = [f.to_input() for per_action in request.findings for f in per_action]
    policy_input["agentgov"] = {"subject": request.subject.to_input(), "pii": summarize_findings(findings),
                                "hooks": public_extensions(request)}
    return policy_input


def question_input(subject: Subject, question: PolicyQuestion, decision_id: str) -> dict[str, Any]:
    """The policy, asked about a response (`context.phase` "response", with its findings), about
    one tool of a listing (`context.phase` "list", no arguments), or about a call a model made
    (`context.phase` "request", with the model's arguments)."""
    action = question.action
    return AgentRequest(
        subject=subject, action=Action(action.kind, action.name),
        resource=Resource(action.resource_type, action.resource_id, None),
        arguments=action.arguments if question.phase != "list" else {},
        findings=tuple(question.findings),
        context={"time": datetime.now(UTC).isoformat(), "request_id": decision_id, "phase": question.phase},
    ).to_input()


def combine(decisions: Sequence[Decision], can_redact: bool) -> Decision:
    """A batch is allowed only if every action is; the first deny is the answer."""
    for d in decisions:
        if not d.allow:
            return d
    redact = sorted({t for d in decisions for t in d.obligations.redact})
    if redact and not can_redact:
        # An obligation no enforcement point here can carry out: refuse rather than leak.
        return Decision.failed(Failure.FORBIDDEN, "redaction_unavailable",
                               error=f"policy requires redacting {redact} but no body rewriting is configured")
    approvals = [d.obligations.approval for d in decisions if d.obligations.approval is not None]
    if approvals and len(decisions) > 1:
        return Decision.failed(Failure.FORBIDDEN, "approval_unavailable",
                               detail="a call that needs an approval cannot be sent in a batch")
    headers: dict[str, str] = {}
    for d in decisions:
        headers.update(d.obligations.headers)
    reasons = tuple(dict.fromkeys(r for d in decisions for r in d.reasons))
    return replace(decisions[0], allow=True, reasons=reasons, status=STATUS_OK,
                   obligations=Obligations(redact=tuple(redact), headers=headers,
                                           approval=approvals[0] if approvals else None))
