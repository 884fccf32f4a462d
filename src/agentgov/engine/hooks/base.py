"""The hook contract: what a decision hook is, what it sees, and what it may answer.

A hook is a plain object with a declared `name`, the `phases` it takes part in and a
`failure_mode`; the runner (`agentgov.engine.pipeline.Governor`) calls it in the configured order,
times it, bounds it by `timeout_s` and applies its failure mode when it raises or times out. The
built-in identity, PII, budget and audit features are hooks on this same interface, and third-party
hooks arrive through the entry-point group `agentgov.hooks` (see `registry.py`, docs/hooks.md).

Phases:
- `before`: sees the request (subject, parsed actions, their texts) before the policy; returns an
  `Enrichment` (policy input additions) or a `Deny` (an early answer; the policy is not asked).
- `after`: sees the request and the decision; carries out obligations, records, debits. A failure
  in a hook whose failure mode is `deny` turns an allow into a 503 deny: nothing it was meant to
  do is silently skipped.
- `rewrite`: for ext_proc, carries out a body-rewriting obligation (`redact`) on the request
  body before it reaches the backend.
- `response`: for ext_proc, returns a `ResponseProcessor` that sees the backend's answer
  (headers, then body chunks) and may pass, rewrite or block it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from agentgov.engine.errors import Failure
from agentgov.engine.model import STATUS_FORBIDDEN, Decision, Finding, Subject
from agentgov.engine.protocols.parsed import ParsedAction

Phase = Literal["before", "after", "rewrite", "response"]
PHASES: tuple[str, ...] = ("before", "after", "rewrite", "response")
FailureMode = Literal["deny", "allow"]
FAILURE_MODES: tuple[str, ...] = ("deny", "allow")
ENTRY_POINT_GROUP = "agentgov.hooks"


@dataclass(frozen=True)
class HookRequest:
    """What a hook sees of one request. Read-only: hooks answer with results, never by mutation."""

    decision_id: str
    entry_point: str  # ext_authz | decision_service | data_api | ext_proc
    method: str
    path: str
    host: str
    headers: Mapping[str, str]  # lower-case names, credentials included (the identity hook needs them)
    subject: Subject
    actions: Sequence[ParsedAction]  # empty before the body is parsed (the identity stage)
    findings: Sequence[Sequence[Finding]] = ()  # per action, from hooks that ran earlier
    extensions: Mapping[str, Any] = field(default_factory=dict)  # earlier hooks' enrichments, by name
    body: bytes = b""
    request_id: str = ""  # Envoy's request id (joins Envoy's access log), or the decision id
    policy_revision: str = ""  # the policy set that decided
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per stage, for after hooks
    phase: str = "request"  # "response" when ext_proc reports what became of the backend's answer

    def evolve(self, **changes: Any) -> HookRequest:
        """`dataclasses.replace`, without re-running the generated __init__: the runner derives a
        request several times per decision, and replace() was a few percent of a decision's time.
        Valid because HookRequest has no __post_init__ and no slots (tests/test_hooks.py checks it
        against replace())."""
        if not changes.keys() <= self.__dict__.keys():
            raise TypeError(f"HookRequest has no field(s) {', '.join(sorted(changes.keys() - self.__dict__.keys()))}")
        new = object.__new__(HookRequest)
        state = dict(self.__dict__)
        state.update(changes)
        object.__setattr__(new, "__dict__", state)
        return new


@dataclass(frozen=True)
class Enrichment:
    """A `before` hook's additions to the policy input. Per-action lists are indexed like
    `HookRequest.actions`; `data` lands in the policy input at `input.hooks.<hook name>`."""

    subject: Subject | None = None  # identity hooks only
    consumed_headers: tuple[str, ...] = ()  # credentials meant for agentgov, removed before the backend
    findings: Sequence[Sequence[Finding]] = ()
    budget: Sequence[Mapping[str, Any]] = ()
    data: Mapping[str, Any] | None = None
    response_headers: Mapping[str, str] = field(default_factory=dict)  # to the client (RateLimit-*)
    # A guarantee: a deny that holds whatever the policy answers. The policy is still asked (so its
    # own deny, a 403 for a forbidden tool, keeps precedence and its reasons); if it allows, this is
    # the answer. The budget hook's 429 and the PII hook's secret_detected work this way by default.
    enforce: Deny | None = None


@dataclass(frozen=True)
class Deny:
    """An early answer: the policy is not asked (`after` hooks still see it, so it is audited)."""

    reason: str
    status: int = STATUS_FORBIDDEN  # a third-party hook may pick any status; built-ins use `failed`
    detail: str = ""  # client-safe
    error: str = ""  # operator-only
    retry_after_s: int | None = None

    @staticmethod
    def failed(failure: Failure, reason: str, *, detail: str = "", error: str = "",
               retry_after_s: int | None = None) -> Deny:
        """An early answer of one of agentgov's failure categories (engine/errors.py)."""
        return Deny(reason, status=failure.status, detail=detail, error=error, retry_after_s=retry_after_s)


@dataclass(frozen=True)
class ResponseContext:
    """What ext_proc knows about the exchange whose response is passing through.

    `ask` puts a question to the same policy that decided the request (the runner supplies it, so
    hooks never import the runner): the findings of a response, or one tool of a `tools/list`.
    """

    decision_id: str
    path: str
    subject: Subject
    actions: Sequence[ParsedAction]
    ask: Callable[[PolicyQuestion], Awaitable[Decision]]
    revision: str = ""  # the policy set's revision: answers may be cached per subject and revision
    budget: Mapping[str, Any] = field(default_factory=dict)  # the request's budget figures (input.budget)


@dataclass(frozen=True)
class PolicyQuestion:
    """A question put to the policy outside the request's own decision: a response's findings
    (`response`), one tool of a listing (`list`, no arguments), or a call a model asked the agent to
    make (`request`, with its arguments: judged as the agent's own call would be)."""

    phase: Literal["response", "list", "request"]
    action: ParsedAction
    findings: Sequence[Finding] = ()


@dataclass(frozen=True)
class BodyVerdict:
    """What a response processor wants done with the body bytes it was handed.

    `replace` None passes the chunk as it came; bytes replace it (b"" holds it back for later).
    `block` ends the exchange: for a buffered response `block_status`/`block_body` become the answer;
    for a stream, `replace` carries the closing error event and every later chunk is dropped.
    """

    replace: bytes | None = None
    block: bool = False
    block_status: int = 403
    block_body: bytes = b""
    reason: str = ""


class ResponseProcessor(Protocol):
    """One response, as it passes. `wants_buffering` asks Envoy for the whole body at once
    (JSON answers: a verdict needs all of it) instead of chunks (event streams)."""

    def on_headers(self, status: int, headers: Mapping[str, str]) -> bool:
        """Return False to let this response through untouched (no body inspection)."""
        ...

    @property
    def wants_buffering(self) -> bool: ...

    async def on_body(self, chunk: bytes, end_of_stream: bool) -> BodyVerdict: ...


@runtime_checkable
class Hook(Protocol):
    """What every hook declares. Which of the methods below it has follows from `phases` (one
    method per phase) plus any of the optional methods it chooses to have."""

    name: str
    phases: frozenset[str]
    failure_mode: str  # "deny" | "allow"
    timeout_s: float | None  # None: the hook's work is bounded and synchronous, no timer needed


# --- the methods a hook may have, declared once ------------------------------------------------
# These Protocols are the typed signatures; `HOOK_METHODS` below says which are phase methods
# (required when the phase is declared) and which are optional, and whether each is async. The
# registry binds a hook's methods once, at load time, after checking them against this table, and
# the runner calls the bound methods: no lookups by name per request.

Before = Callable[[HookRequest], Awaitable[Enrichment | Deny | None]]
After = Callable[[HookRequest, Decision], Awaitable[None]]
Rewrite = Callable[[bytes, Sequence[str]], bytes | None]
Respond = Callable[[ResponseContext], ResponseProcessor | None]
Start = Callable[[], Awaitable[None]]
Close = Callable[[], Awaitable[None]]
# Veto or accept a new policy set's data before it is swapped in: raise ValueError to refuse the set;
# return the commit to run once it is active (the budget hook's per-tenant caps).
CheckPolicyData = Callable[[Mapping[str, Any]], Callable[[], None]]
# The backend's reported usage for an exchange (None: unreadable): settle what was reserved.
Settle = Callable[[str, str, str, int | None, int | None], Awaitable[None]]
# A shadow candidate answered differently: record it (never enforced).
RecordShadow = Callable[[HookRequest, Decision, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    phase: str | None  # the phase that requires it; None: optional, the hook may have it
    is_async: bool
    arity: int  # positional parameters after self
    returns: str
    purpose: str


HOOK_METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("before", "before", True, 1, "Enrichment | Deny | None",
               "sees the request before the policy; enriches its input or answers early"),
    MethodSpec("after", "after", True, 2, "None",
               "sees the request and the decision (every exit, early denies included)"),
    MethodSpec("rewrite", "rewrite", False, 2, "bytes | None",
               "carries out a body-rewriting obligation on the request body (ext_proc)"),
    MethodSpec("response", "response", False, 1, "ResponseProcessor | None",
               "returns a processor for the backend's answer (ext_proc)"),
    MethodSpec("start", None, True, 0, "None", "starts what the hook keeps running, inside the event loop"),
    MethodSpec("close", None, True, 0, "None", "stops it; called once at shutdown"),
    MethodSpec("check_policy_data", None, False, 1, "Callable[[], None]",
               "vets a new policy set's data before a swap (ValueError refuses the set)"),
    MethodSpec("settle", None, True, 5, "None",
               "the backend's reported usage for an exchange: decision id, tenant, model, input and output tokens"),
    MethodSpec("record_shadow", None, True, 3, "None", "records a shadow candidate's differing answer"),
)
_SPECS = {spec.name: spec for spec in HOOK_METHODS}


def interface_problems(hook: object) -> list[str]:
    """Why `hook` does not satisfy the hook interface (empty when it does). Checked when a hook
    is loaded, so a broken plugin is a start-up error that names it, not a failure per request."""
    problems: list[str] = []
    name = getattr(hook, "name", None)
    if not isinstance(name, str) or not name:
        problems.append("`name` must be a non-empty string")
    phases = getattr(hook, "phases", None)
    if not isinstance(phases, frozenset | set | tuple | list) or not phases:
        problems.append(f"`phases` must be a non-empty set of {', '.join(PHASES)}")
        phases = ()
    unknown = sorted(str(p) for p in phases if p not in PHASES)
    if unknown:
        problems.append(f"unknown phase(s) {', '.join(unknown)} (known: {', '.join(PHASES)})")
    if getattr(hook, "failure_mode", None) not in FAILURE_MODES:
        problems.append("`failure_mode` must be 'deny' or 'allow'")
    timeout = getattr(hook, "timeout_s", None)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        problems.append("`timeout_s` must be a positive number or None")
    for spec in HOOK_METHODS:
        method = getattr(hook, spec.name, None)
        required = spec.phase is not None and spec.phase in phases
        if method is None:
            if required:
                problems.append(f"declares phase {spec.phase!r} but has no {spec.name}() method")
            continue
        if spec.phase is not None and not required:
            continue  # a phase method of an undeclared phase is never called
        problems.extend(_method_problems(spec, method))
    return problems


def _method_problems(spec: MethodSpec, method: object) -> list[str]:
    if not callable(method):
        return [f"{spec.name} must be a method"]
    problems = []
    if inspect.iscoroutinefunction(method) != spec.is_async:
        problems.append(f"{spec.name}() must be {'`async def`' if spec.is_async else 'a plain `def`'}")
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return problems
    try:
        signature.bind(*([None] * spec.arity))
    except TypeError:
        problems.append(f"{spec.name}() must take {spec.arity} positional argument(s)")
    return problems

