"""The one interface every decision backend implements, and the shared result reader.

A backend owns its SDK and the SDK's errors: `evaluate` never raises, and any failure becomes a
deny whose reason names the error (docs/architecture.md §3, fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentgov.engine.model import (
    STATUS_ERROR,
    STATUS_FORBIDDEN,
    STATUS_OK,
    ApprovalSpec,
    Decision,
    Obligations,
)

REASON_ENGINE_ERROR = "engine_error"
REASON_UNDEFINED = "decision_undefined"
REASON_CONFLICT = "decision_conflict"  # two definitions of the decision rule matched with different values
REASON_INVALID_RESULT = "invalid_decision"
REASON_DEFAULT_DENY = "default_deny"


@dataclass(frozen=True)
class Explanation:
    """Why a decision came out as it did: the rules/policies that produced it, for humans."""

    decision: Decision
    lines: list[str] = field(default_factory=list)


@runtime_checkable
class DecisionBackend(Protocol):
    """`evaluate(input) -> Decision`, async so a remote backend fits the same shape."""

    name: str

    async def evaluate(self, policy_input: Mapping[str, Any]) -> Decision: ...

    async def explain(self, policy_input: Mapping[str, Any]) -> Explanation: ...

    async def close(self) -> None: ...


class ResultReader(Protocol):
    """Reads a policy's raw result into a Decision: agentgov's contract, or OPA-Envoy's."""

    def __call__(self, result: Any, *, engine: str) -> Decision: ...


def engine_error(engine: str, message: str) -> Decision:
    """A deny for an engine failure. Status 403, not 503: the policy could not grant, so it did not."""
    return Decision.deny(REASON_ENGINE_ERROR, engine=engine, error=first_line(message))


def is_fatal(exc: BaseException) -> bool:
    """Interpreter-level exceptions pass through; everything an engine raises becomes a deny."""
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


def first_line(message: str) -> str:
    """Engine errors carry Rust backtraces and source excerpts; keep only the meaningful line."""
    text = message.split("Stack backtrace:")[0].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("error:"):
            location = next((x[4:].strip() for x in lines if x.startswith("--> ")), "")
            msg = ln[len("error:"):].strip()
            return f"{location}: {msg}" if location else msg
    return lines[0] if lines else "unknown engine error"


def decision_from_document(result: Any, *, engine: str) -> Decision:
    """Read a policy result into a `Decision`, strictly: anything unexpected is a deny.

    Accepted shapes: a boolean (plain `allow` rule) or `{allow, reasons[], status?, obligations?}`.
    """
    if result is None:
        return Decision.deny(REASON_UNDEFINED, engine=engine, error="the decision rule is undefined")
    if isinstance(result, bool):
        if result:
            return Decision(allow=True, reasons=(), status=STATUS_OK, engine=engine)
        return Decision(allow=False, reasons=(REASON_DEFAULT_DENY,), status=STATUS_FORBIDDEN, engine=engine)
    if not isinstance(result, Mapping):
        return invalid_result(engine, f"expected an object or boolean, got {type(result).__name__}")
    allow = result.get("allow")
    if not isinstance(allow, bool):
        return invalid_result(engine, "`allow` must be a boolean")
    reasons = result.get("reasons", [])
    if not isinstance(reasons, list | tuple | set | frozenset) or not all(isinstance(r, str) for r in reasons):
        return invalid_result(engine, "`reasons` must be a list or set of strings")
    if isinstance(reasons, set | frozenset):  # a Rego set: give it a stable order
        reasons = sorted(reasons)
    status = result.get("status")
    if status is None:
        status = STATUS_OK if allow else STATUS_FORBIDDEN
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return invalid_result(engine, "`status` must be an HTTP status code")
    if not allow and status < 400:
        return invalid_result(engine, f"a deny cannot carry status {status}")
    obligations = _read_obligations(result.get("obligations", {}))
    if isinstance(obligations, str):
        return invalid_result(engine, obligations)
    if not allow and not reasons:
        reasons = [REASON_DEFAULT_DENY]
    return Decision(
        allow=allow,
        reasons=tuple(reasons),
        status=status if not allow else STATUS_OK,
        obligations=obligations if allow else Obligations(),
        engine=engine,
    )


def _read_obligations(raw: Any) -> Obligations | str:
    if raw is None:
        return Obligations()
    if not isinstance(raw, Mapping):
        return "`obligations` must be an object"
    unknown = set(raw) - {"redact", "headers", "approval"}
    if unknown:
        # An obligation we do not understand cannot be enforced; allowing without it would be fail-open.
        return f"unknown obligation(s): {', '.join(sorted(unknown))}"
    redact = raw.get("redact", [])
    if not isinstance(redact, list | tuple | set | frozenset) or not all(isinstance(r, str) for r in redact):
        return "`obligations.redact` must be a list of strings"
    headers = raw.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        return "`obligations.headers` must map strings to strings"
    approval = read_approval(raw.get("approval"))
    if isinstance(approval, str):
        return approval
    return Obligations(redact=tuple(sorted(set(redact))), headers=dict(headers), approval=approval)


def read_approval(raw: Any) -> ApprovalSpec | str | None:
    """`obligations.approval: {approvers: [role, …], reason?, ttl_s?, uses?}` (None: absent), or why
    it is malformed: an approval agentgov cannot read is a deny, never an allow without it."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"approvers", "reason", "ttl_s", "uses"}:
        return "`obligations.approval` must be {approvers, reason?, ttl_s?, uses?}"
    approvers = raw.get("approvers")
    if isinstance(approvers, set | frozenset):
        approvers = sorted(approvers)
    if not isinstance(approvers, list | tuple) or not approvers or not all(isinstance(a, str) and a for a in approvers):
        return "`obligations.approval.approvers` must be a non-empty list of roles"
    reason = raw.get("reason", "approval_required")
    ttl = raw.get("ttl_s")
    uses = raw.get("uses", 1)
    if not isinstance(reason, str) or not reason:
        return "`obligations.approval.reason` must be a string"
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        return "`obligations.approval.ttl_s` must be a positive number"
    if isinstance(uses, bool) or not isinstance(uses, int) or uses < 1:
        return "`obligations.approval.uses` must be a positive integer"
    return ApprovalSpec(tuple(approvers), reason, float(ttl) if ttl is not None else None, uses)


def invalid_result(engine: str, why: str) -> Decision:
    return Decision.deny(REASON_INVALID_RESULT, engine=engine, error=f"invalid decision document: {why}")


__all__ = [
    "REASON_CONFLICT",
    "REASON_DEFAULT_DENY",
    "REASON_ENGINE_ERROR",
    "REASON_INVALID_RESULT",
    "REASON_UNDEFINED",
    "STATUS_ERROR",
    "DecisionBackend",
    "Explanation",
    "ResultReader",
    "decision_from_document",
    "engine_error",
    "invalid_result",
    "is_fatal",
]
