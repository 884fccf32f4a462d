"""The hook contract: what a decision hook is, what it sees, and what it may answer.

A hook is a plain object with a declared `name`, the `phases` it takes part in and a
`failure_mode`; the runner (`agentgov.engine.governor.Governor`) calls it in the configured order,
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

from agentgov.engine.model import Decision, Finding, Subject
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


@dataclass(frozen=True)
class Deny:
    """An early answer: the policy is not asked (`after` hooks still see it, so it is audited)."""

    reason: str
    status: int = 403
    detail: str = ""  # client-safe
    error: str = ""  # operator-only
    retry_after_s: int | None = None


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
    phase: Literal["response", "list"]
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
    name: str
    phases: frozenset[str]
    failure_mode: str  # "deny" | "allow"
    timeout_s: float | None  # None: the hook's work is bounded and synchronous, no timer needed


class BeforeHook(Hook, Protocol):
    async def before(self, request: HookRequest) -> Enrichment | Deny | None: ...


class AfterHook(Hook, Protocol):
    async def after(self, request: HookRequest, decision: Decision) -> None: ...


class RewriteHook(Hook, Protocol):
    def rewrite(self, body: bytes, redact: Sequence[str]) -> bytes | None: ...


class ResponseHook(Hook, Protocol):
    def response(self, context: ResponseContext) -> ResponseProcessor | None: ...


_PHASE_METHODS = {"before": "before", "after": "after", "rewrite": "rewrite", "response": "response"}


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
    for phase in phases:
        method = getattr(hook, _PHASE_METHODS.get(str(phase), ""), None)
        if method is None or not callable(method):
            problems.append(f"declares phase {phase!r} but has no {phase}() method")
        elif phase in ("before", "after") and not inspect.iscoroutinefunction(method):
            problems.append(f"{phase}() must be `async def`")
    return problems
