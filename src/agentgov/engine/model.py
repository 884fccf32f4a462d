"""The small frozen types every stage speaks: who asks, what for, and what was decided.

Adapters build an `AgentRequest`; hooks enrich it; a backend turns its policy input into a
`Decision`. Nothing here knows about Envoy, gRPC or the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentgov.engine.errors import OK_STATUS, Failure

ActionKind = Literal[
    "llm.chat", "tool.call", "tool.list", "resource.read", "prompt.get", "mcp.session", "http"
]
ACTION_KINDS: tuple[str, ...] = (
    "llm.chat", "tool.call", "tool.list", "resource.read", "prompt.get", "mcp.session", "http",
)
FindingCategory = Literal["pii", "secret"]

@dataclass(frozen=True, slots=True)
class Subject:
    """A caller whose identity a hook has verified (or not: `authenticated` says which)."""

    id: str
    roles: tuple[str, ...] = ()
    tenant: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    authenticated: bool = False

    def to_input(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "roles": list(self.roles),
            "tenant": self.tenant,
            "claims": dict(self.claims),
            "authenticated": self.authenticated,
        }


ANONYMOUS = Subject(id="anonymous")


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Resource:
    type: str
    id: str
    server: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector hit, by type and count only: raw values never leave the detector."""

    type: str
    count: int
    path: str
    category: FindingCategory = "pii"

    def to_input(self) -> dict[str, Any]:
        return {"type": self.type, "count": self.count, "path": self.path, "category": self.category}


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """One agent action, protocol-independent. `to_input()` is the policy input contract."""

    subject: Subject
    action: Action
    resource: Resource
    arguments: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    budget: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    http: Mapping[str, Any] = field(default_factory=dict)
    extensions: Mapping[str, Any] = field(default_factory=dict)  # third-party hooks' enrichments, by hook
    llm: Mapping[str, Any] | None = None  # an LLM call's own section (the tools it offers the model)

    def to_input(self) -> dict[str, Any]:
        findings = [f.to_input() for f in self.findings]
        doc = {
            "subject": self.subject.to_input(),
            "action": {"kind": self.action.kind, "name": self.action.name},
            "resource": {"type": self.resource.type, "id": self.resource.id, "server": self.resource.server},
            "arguments": dict(self.arguments),
            "pii": summarize_findings(findings),
            "budget": dict(self.budget),
            "context": dict(self.context),
            "http": dict(self.http),
        }
        if self.extensions:
            doc["hooks"] = {name: dict(data) for name, data in self.extensions.items()}
        if self.llm is not None:
            doc["llm"] = dict(self.llm)
        return doc


def summarize_findings(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """Findings plus the per-category type sets that policies (Cedar in particular) test directly."""
    types = sorted({f["type"] for f in findings if f.get("category", "pii") == "pii"})
    secrets = sorted({f["type"] for f in findings if f.get("category") == "secret"})
    return {"findings": findings, "types": types, "secrets": secrets}


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """The policy's `obligations.approval`: allowed once a person with one of `approvers` says yes to
    this exact call; the approval then serves `uses` calls within `ttl_s` of being given."""

    approvers: tuple[str, ...]
    reason: str = "approval_required"
    ttl_s: float | None = None  # None: the configured approvals.default_ttl_s
    uses: int = 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"approvers": list(self.approvers), "reason": self.reason, "uses": self.uses}
        if self.ttl_s is not None:
            out["ttl_s"] = self.ttl_s
        return out


@dataclass(frozen=True, slots=True)
class ApprovalNote:
    """What a decision did with an approval: `requested` (or `pending`: asked again while it waits),
    or `used` (this call spent one of its uses). Sent to the caller and written to the audit record."""

    id: str
    event: str
    expired: tuple[str, ...] = ()  # approvals for the same call found expired on the way
    status_url: str = ""  # where the caller can ask how its approval stands (approvals.status_url)
    # The call was one MCP JSON-RPC request: a refusal is answered as a JSON-RPC error for `rpc_id`.
    jsonrpc: bool = False
    rpc_id: str | int | None = None

    def fields(self) -> dict[str, str]:
        """What each door adds to a refusal that waits for this approval."""
        out = {"approval_id": self.id}
        if self.status_url:
            out["status_url"] = self.status_url
        return out


@dataclass(frozen=True, slots=True)
class Obligations:
    """What an allow obliges the enforcement point to do: redact these PII types, set these headers."""

    redact: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    # An LLM request's offered tools the caller may not call: removed from its body (ext_proc).
    remove_tools: tuple[str, ...] = ()
    approval: ApprovalSpec | None = None  # allowed once approved (the approvals stage carries it out)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"redact": list(self.redact), "headers": dict(self.headers)}
        if self.remove_tools:
            out["remove_tools"] = list(self.remove_tools)
        if self.approval is not None:
            out["approval"] = self.approval.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class HttpDirectives:
    """What an OPA-Envoy style result asks of the enforcement point beyond allow/deny.

    Only OPA-Envoy compatibility mode produces these; agentgov's own result contract uses
    `Obligations`. Header values are lists because OPA-Envoy lets a policy repeat a header.
    """

    headers: tuple[tuple[str, str], ...] = ()  # allow: to the upstream; deny: to the client
    response_headers_to_add: tuple[tuple[str, str], ...] = ()  # allow: to the client
    request_headers_to_remove: tuple[str, ...] = ()
    body: str | None = None  # deny: the response body, verbatim
    query_parameters_to_set: tuple[tuple[str, str], ...] = ()
    query_parameters_to_remove: tuple[str, ...] = ()
    dynamic_metadata: Mapping[str, Any] = field(default_factory=dict)


# Statuses come from the one error table (engine/errors.py); these names are for readability.
STATUS_OK = OK_STATUS
STATUS_UNAUTHENTICATED = Failure.UNAUTHENTICATED.status
STATUS_FORBIDDEN = Failure.FORBIDDEN.status
STATUS_RATE_LIMITED = Failure.OVER_BUDGET.status
STATUS_ERROR = Failure.UNAVAILABLE.status


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer. A deny always carries at least one reason and an HTTP-ish status."""

    allow: bool
    reasons: tuple[str, ...] = ()
    status: int = STATUS_FORBIDDEN
    obligations: Obligations = field(default_factory=Obligations)
    engine: str = ""
    errors: tuple[str, ...] = ()  # engine and operator detail: logged, never sent to clients
    directives: HttpDirectives | None = None
    detail: str = ""  # a client-safe explanation (e.g. where a body fails to parse), sent with the deny
    approval: ApprovalNote | None = None  # the approval this decision asked for or used

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "allow": self.allow,
            "reasons": list(self.reasons),
            "status": self.status,
            "obligations": self.obligations.to_dict(),
        }
        if self.errors:
            out["errors"] = list(self.errors)
        if self.directives is not None:
            out["directives"] = directives_to_dict(self.directives)
        return out

    @staticmethod
    def deny(reason: str, *, status: int = STATUS_FORBIDDEN, engine: str = "", error: str | None = None,
             detail: str = "") -> Decision:
        return Decision(
            allow=False,
            reasons=(reason,),
            status=status,
            engine=engine,
            errors=(error,) if error else (),
            detail=detail,
        )


    @staticmethod
    def failed(failure: Failure, reason: str, *, detail: str = "", error: str | None = None,
               engine: str = "") -> Decision:
        """A deny of one of agentgov's own failure categories: its status comes from the table."""
        return Decision.deny(reason, status=failure.status, engine=engine, error=error, detail=detail)


def directives_to_dict(d: HttpDirectives) -> dict[str, Any]:
    """The directives as plain JSON (header pairs as [name, value] lists, so repeats survive)."""
    out: dict[str, Any] = {
        "headers": [list(h) for h in d.headers],
        "response_headers_to_add": [list(h) for h in d.response_headers_to_add],
        "request_headers_to_remove": list(d.request_headers_to_remove),
        "query_parameters_to_set": [list(q) for q in d.query_parameters_to_set],
        "query_parameters_to_remove": list(d.query_parameters_to_remove),
        "dynamic_metadata": dict(d.dynamic_metadata),
    }
    if d.body is not None:
        out["body"] = d.body
    return out


def json_default(value: Any) -> Any:
    """`json.dumps(default=…)` for what engines hand back: Rego sets (sorted, as Rego prints them)
    and read-only mappings."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
