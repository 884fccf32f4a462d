"""The one place the order of a decision lives: the staged runner every entry point uses.

    identity hook → parse (per input format) → before hooks, in the configured order → policy
    → after hooks → Verdict

and, for ext_proc, the two later stages of the same exchange: `rewrite_request` (body-rewriting
obligations) and `response_processors` (the backend's answer, judged by the same policy).

Adapters hand over an `Envelope` (transport facts) and get back a `Verdict`. Nothing here knows
Envoy or gRPC. A hook's exception or timeout is handled here by its declared failure mode (that is
the hook contract); anything else unexpected propagates to server/, which alone maps it to a 503.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.hooks.base import (
    Deny,
    Enrichment,
    HookRequest,
    PolicyQuestion,
    ResponseContext,
    ResponseProcessor,
)
from agentgov.engine.hooks.identity import IdentityHook, IdentityVerifier
from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.metrics import HOOK_FAILURES, STAGE_LATENCY
from agentgov.engine.model import (
    ANONYMOUS,
    STATUS_ERROR,
    STATUS_FORBIDDEN,
    STATUS_OK,
    STATUS_RATE_LIMITED,
    Action,
    AgentRequest,
    Decision,
    Obligations,
    Resource,
    Subject,
    summarize_findings,
)
from agentgov.engine.policy import shadow as shadow_mode
from agentgov.engine.policy.policy_set import PolicySet
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.classify import classify
from agentgov.engine.protocols.jsonbody import strings_in
from agentgov.engine.protocols.mcp import DEFAULT_MAX_BATCH
from agentgov.engine.protocols.opa_envoy import opa_envoy_input
from agentgov.engine.protocols.parsed import ParsedAction

log = logging.getLogger("agentgov.governor")
STATUS_BAD_REQUEST = 400
STATUS_TOO_LARGE = 413
STATUS_UNSUPPORTED_MEDIA = 415
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
class HookRun:
    """One hook's part in one decision: which hook, in which phase, how it went, how long it took."""

    name: str
    phase: str
    outcome: str  # ok | deny | error | timeout (error and timeout then follow the failure mode)
    seconds: float


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
    hooks: tuple[HookRun, ...] = ()  # every hook that ran, in order
    actions: tuple[ParsedAction, ...] = ()  # what was decided, for the response phase (ext_proc)
    response_headers: Mapping[str, str] = field(default_factory=dict)  # hooks' headers for the client
    policy_revision: str = ""  # the policy set that decided: `<revision>@sha256:<digest>`


InputFormat = Literal["agentgov", "opa-envoy"]
INPUT_FORMATS: tuple[str, ...] = ("agentgov", "opa-envoy")
MCP_FILTER_NAMESPACE = "envoy.filters.http.mcp"
_PARSE_STAGE = STAGE_LATENCY.labels(stage="parse")
_POLICY_STAGE = STAGE_LATENCY.labels(stage="policy")


@dataclass
class GovernorOptions:
    allow_truncated_body: bool = False
    can_redact: bool = False  # true once a body-rewriting enforcement point (ext_proc) is configured
    mcp_paths: tuple[str, ...] = ()
    # "opa-envoy": policies get the OPA-Envoy plugin's input and answer in its result shapes.
    input_format: InputFormat = "agentgov"
    revision: str = ""  # the loaded policy set's revision (cache keys, records)
    max_batch: int = DEFAULT_MAX_BATCH  # JSON-RPC messages per MCP request


class Decider(Protocol):
    """What an enforcement point needs: a Governor here, or a remote decision service."""

    @property
    def wants_envoy_attributes(self) -> bool: ...

    async def decide(self, env: Envelope) -> Verdict: ...

    async def close(self) -> None: ...


class Service(Protocol):
    """Something that runs beside the decisions for the Governor's lifetime (a bundle reloader)."""

    name: str

    def describe(self) -> dict[str, Any]: ...

    async def start(self) -> bool: ...

    async def close(self) -> None: ...


# Shadow evaluations waiting to run; beyond this many, new decisions are not shadowed (and counted):
# a candidate must never turn into a backlog that slows the active policy down.
MAX_PENDING_SHADOW = 256


class Governor:
    def __init__(self, policy: DecisionBackend | PolicySet, identity: IdentityVerifier | None,
                 options: GovernorOptions | None = None, hooks: Sequence[HookSlot] = ()) -> None:
        self.identity = identity
        self.options = options or GovernorOptions()
        if not isinstance(policy, PolicySet):
            # A bare backend (remote OPA, tests): its identity is the configured revision, else a per-load id.
            policy = PolicySet(policy, revision=self.options.revision or uuid.uuid4().hex[:12])
        self._policy = policy
        self.shadow: PolicySet | None = None  # a candidate evaluated beside the active set, never enforced
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._services: list[Service] = []
        self._hidden = _HIDDEN_HEADERS | ({identity.api_key_header} if identity else set())
        self._identity = HookSlot(IdentityHook(identity), "deny", None) if identity else None
        self.hooks = tuple(hooks)
        self._before = [h for h in self.hooks if "before" in h.hook.phases]
        self._after = [h for h in self.hooks if "after" in h.hook.phases]
        self._rewrite = [h for h in self.hooks if "rewrite" in h.hook.phases]
        self._response = [h for h in self.hooks if "response" in h.hook.phases]
        self._stages = {h.name: STAGE_LATENCY.labels(stage=h.name)
                        for h in (*self.hooks, *([self._identity] if self._identity else []))}

    @property
    def wants_envoy_attributes(self) -> bool:
        return self.options.input_format == "opa-envoy"

    @property
    def policy(self) -> PolicySet:
        """The active policy set. Read once per decision: a swap never changes a check in flight."""
        return self._policy

    @property
    def backend(self) -> DecisionBackend:
        return self._policy.backend

    @property
    def revision(self) -> str:
        return self._policy.label

    def swap(self, policy: PolicySet) -> None:
        """Make `policy` the active set: one reference assignment, so every decision sees either the
        old set or the new one, whole. Hooks that read the policy's data (the budget hook's
        per-tenant caps) check it first and may refuse the set (ValueError); nothing changes then.
        The old set is not closed: checks in flight still use it (local engines hold no
        connections; the garbage collector frees it)."""
        commits: list[Callable[[], None]] = []
        if policy.data is not None:
            for slot in self.hooks:
                check = getattr(slot.hook, "check_policy_data", None)
                if callable(check):
                    commits.append(check(policy.data))
        self._policy = policy
        for commit in commits:
            commit()

    def set_shadow(self, policy: PolicySet) -> None:
        self.shadow = policy

    def attach(self, service: Service) -> None:
        """Run `service` (started by `start`, closed by `close`) for as long as this Governor."""
        self._services.append(service)

    def service_status(self) -> dict[str, dict[str, Any]]:
        """Each attached service's state, by name (health shows the bundles' here)."""
        return {service.name: service.describe() for service in self._services}

    async def start(self) -> None:
        """Start what hooks keep running (the audit log's writer, its sinks) and the attached
        services (bundle reloaders): inside the event loop."""
        for slot in self.hooks:
            start = getattr(slot.hook, "start", None)
            if start is not None:
                await start()
        for service in self._services:
            await service.start()

    async def close(self) -> None:
        for service in self._services:
            await service.close()
        if self._shadow_tasks:
            await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        for slot in self.hooks:
            close = getattr(slot.hook, "close", None)
            if close is not None:
                await close()
        await self._policy.backend.close()

    async def decide(self, env: Envelope, *, entry_point: str = "ext_authz") -> Verdict:
        """An HTTP request as an enforcement point saw it: parse the protocol, then decide each action."""
        return await self._decide(env, None, entry_point)

    async def decide_action(self, env: Envelope, action: ParsedAction, *,
                            entry_point: str = "decision_service") -> Verdict:
        """An action a caller described itself (the decision service's ActionRequest): no body to parse."""
        return await self._decide(env, [action], entry_point)

    async def decide_stated(self, policy_input: Mapping[str, Any], *, entry_point: str = "data_api") -> Verdict:
        """A policy input a caller stated whole (OPA's Data API). The subject is the caller's word
        (so the identity hook does not run; bind the Data API where only trusted callers reach it);
        every other stage runs: the PII hook scans the arguments, after hooks see the decision."""
        decision_id = secrets.token_hex(16)
        policy = self._policy
        runs: list[HookRun] = []
        subject = _stated_subject(policy_input)
        if self.options.input_format == "opa-envoy":
            request = HookRequest(decision_id, entry_point, "", "", "", {}, subject, (), policy_revision=policy.label)
            return await self._finish_opa_envoy(request, dict(policy_input), runs, policy)
        action, resource = policy_input.get("action", {}), policy_input.get("resource", {})
        arguments = dict(policy_input.get("arguments") or {})
        parsed = ParsedAction(str(action.get("kind", "")), str(action.get("name", "")), str(resource.get("type", "")),
                              str(resource.get("id", "")), arguments, tuple(strings_in(arguments, "arguments")),
                              protocol="stated")
        request = HookRequest(decision_id, entry_point, "", "", str(resource.get("server") or ""), {}, subject,
                              (parsed,), policy_revision=policy.label)
        request, early = await self._before_hooks(request, runs)
        if early is not None:
            return await self._finish(request, early, runs)
        document = dict(policy_input)
        stated = list(policy_input.get("pii", {}).get("findings", []))
        found = [f.to_input() for f in (request.findings[0] if request.findings else ())]
        document["pii"] = summarize_findings(stated + [f for f in found if f not in stated])
        extensions = {k: v for k, v in request.extensions.items() if not k.startswith("_")}
        budget = (request.extensions.get("_budget") or [{}])[0]
        if budget:
            document["budget"] = {**budget, **dict(policy_input.get("budget") or {})}
        if extensions:
            document["hooks"] = extensions
        decision = await policy.backend.evaluate(document)
        self._shadow_compare(request, (document,), [decision])
        return await self._finish(request, decision, runs, inputs=(document,))

    async def _decide(self, env: Envelope, given: Sequence[ParsedAction] | None, entry_point: str) -> Verdict:
        decision_id = secrets.token_hex(16)
        policy = self._policy
        runs: list[HookRun] = []
        request = HookRequest(decision_id, entry_point, env.method, env.path, env.host, env.headers, ANONYMOUS, (),
                              body=env.body, request_id=env.request_id or decision_id, policy_revision=policy.label)
        consumed: tuple[str, ...] = ()
        if self._identity is not None:
            result = await self._run_before(self._identity, request, runs)
            if isinstance(result, Deny):
                return await self._finish(request, _deny(result), runs)
            if isinstance(result, Enrichment) and result.subject is not None:
                request = request.evolve(subject=result.subject)
                consumed = result.consumed_headers
        if env.body_truncated and not self.options.allow_truncated_body:
            return await self._finish(request, Decision.deny(
                "body_truncated", status=STATUS_TOO_LARGE, error="request body exceeds the inspection limit",
                detail="the request body exceeds the inspection limit"), runs, consumed=consumed)
        charset = _declared_charset(env.headers.get("content-type", ""))
        if env.body and charset not in ("", "utf-8", "utf8"):
            # A backend that honours the declared charset would read other characters than agentgov does.
            return await self._finish(request, Decision.deny(
                "unsupported_charset", status=STATUS_UNSUPPORTED_MEDIA,
                detail="the request body must be UTF-8 (Content-Type declares another charset)"), runs,
                consumed=consumed)
        started = time.perf_counter()
        try:
            actions = list(given) if given is not None else classify(
                env.method, env.path, env.host, env.body, self.options.mcp_paths,
                mcp_metadata=env.filter_metadata.get(MCP_FILTER_NAMESPACE), headers=env.headers,
                max_batch=self.options.max_batch)
        except ProtocolError as exc:
            if self.options.input_format == "opa-envoy":
                actions = []  # OPA-Envoy policies judge any body; the input builder below is the parser
            else:
                return await self._finish(request, _malformed(exc), runs, consumed=consumed)
        finally:
            timings = {"parse": _observe(_PARSE_STAGE, started)}
        request = request.evolve(actions=tuple(actions), timings=timings)
        if self.options.input_format == "opa-envoy" and given is None:
            return await self._decide_opa_envoy(env, request, runs, consumed, policy)
        request, early = await self._before_hooks(request, runs)
        if early is not None:
            return await self._finish(request, early, runs, consumed=consumed)
        started = time.perf_counter()
        inputs: list[dict[str, Any]] = []
        decisions: list[Decision] = []
        budgets = request.extensions.get("_budget", ())
        extensions = {k: v for k, v in request.extensions.items() if not k.startswith("_")}
        for i, parsed in enumerate(actions):
            agent_request = AgentRequest(
                subject=request.subject,
                action=Action(parsed.kind, parsed.name),
                resource=Resource(parsed.resource_type, parsed.resource_id, env.host or None),
                arguments=parsed.arguments,
                findings=tuple(request.findings[i]) if i < len(request.findings) else (),
                budget=budgets[i] if i < len(budgets) else {},
                context=self._context(env, decision_id),
                http={"method": env.method, "path": env.path, "host": env.host,
                      "headers": {k: v for k, v in env.headers.items()
                                  if k not in self._hidden and not k.startswith("x-agentgov-")}},
                extensions=extensions,
            )
            policy_input = agent_request.to_input()
            inputs.append(policy_input)
            decision = await policy.backend.evaluate(policy_input)
            decisions.append(decision)
            if not decision.allow:
                break
        timings["policy"] = _observe(_POLICY_STAGE, started)
        self._shadow_compare(request, inputs, decisions)
        decision = self._combine(decisions)
        return await self._finish(request, decision, runs, inputs=tuple(inputs), consumed=consumed,
                                  summary=", ".join(f"{a.kind} {a.name}" for a in actions[:len(decisions)]))

    async def _decide_opa_envoy(self, env: Envelope, request: HookRequest, runs: list[HookRun],
                                consumed: tuple[str, ...], policy: PolicySet) -> Verdict:
        started = time.perf_counter()
        try:
            policy_input = opa_envoy_input(
                method=env.method, path=env.path, host=env.host, headers=env.headers, body=env.body,
                body_truncated=env.body_truncated, source_ip=env.source_ip, request_id=env.request_id,
                attributes=env.envoy_attributes)
        except ProtocolError as exc:
            return await self._finish(request, _malformed(exc), runs, consumed=consumed)
        finally:
            request = request.evolve(timings={**request.timings, "input": _observe(_PARSE_STAGE, started)})
        if not request.actions and env.body:
            # A body agentgov's parsers refused (OPA-Envoy policies judge it anyway): hooks see it as text.
            text = env.body.decode("utf-8", "replace")
            request = request.evolve(actions=(ParsedAction("http", f"{env.method} {env.path.split('?', 1)[0]}",
                                                             "route", env.path, texts=(("body", text),)),))
        verdict = await self._finish_opa_envoy(request, policy_input, runs, policy)
        return replace(verdict, consumed_headers=consumed)

    async def _finish_opa_envoy(self, request: HookRequest, policy_input: dict[str, Any],
                                runs: list[HookRun], policy: PolicySet) -> Verdict:
        """OPA-Envoy inputs keep the plugin's shape; what agentgov's hooks add goes under `input.agentgov`
        (a key the plugin never sets), so existing policies run unchanged and new ones can read it."""
        request, early = await self._before_hooks(request, runs)
        if early is not None:
            return await self._finish(request, early, runs)
        findings = [f.to_input() for per_action in request.findings for f in per_action]
        extensions = {k: v for k, v in request.extensions.items() if not k.startswith("_")}
        policy_input["agentgov"] = {"subject": request.subject.to_input(), "pii": summarize_findings(findings),
                                    "hooks": extensions}
        started = time.perf_counter()
        decision = await policy.backend.evaluate(policy_input)
        request = request.evolve(timings={**request.timings, "policy": _observe(_POLICY_STAGE, started)})
        self._shadow_compare(request, (policy_input,), [decision])
        # The path without its query string: queries can carry personal data, and this ends up in logs.
        summary = f"http {request.method} {request.path.split('?', 1)[0]}"
        return await self._finish(request, decision, runs, inputs=(policy_input,), summary=summary)

    # --- hooks ----------------------------------------------------------------------------------

    async def _before_hooks(self, request: HookRequest, runs: list[HookRun]) -> tuple[HookRequest, Decision | None]:
        """Run the before hooks in order, folding each enrichment into the request the next one sees."""
        for slot in self._before:
            result = await self._run_before(slot, request, runs)
            if isinstance(result, Deny):
                return request, _deny(result)
            if isinstance(result, Enrichment):
                request = _enrich(request, slot.name, result)
        return request, None

    async def _run_before(self, slot: HookSlot, request: HookRequest, runs: list[HookRun]) -> Enrichment | Deny | None:
        started = time.perf_counter()
        outcome = "ok"
        try:
            call = slot.hook.before(request)  # type: ignore[attr-defined]
            result = await (asyncio.wait_for(call, slot.timeout_s) if slot.timeout_s else call)
            if result is not None and not isinstance(result, Enrichment | Deny):
                raise TypeError(f"before() returned {type(result).__name__}, not Enrichment, Deny or None")
            if isinstance(result, Deny):
                outcome = "deny"
            return result
        except TimeoutError:
            outcome = "timeout"
            return self._failed(slot, "before", "timed out")
        except Exception as exc:
            outcome = "error"
            return self._failed(slot, "before", type(exc).__name__)
        finally:
            elapsed = time.perf_counter() - started
            self._stages[slot.name].observe(elapsed)
            runs.append(HookRun(slot.name, "before", outcome, elapsed))

    def _failed(self, slot: HookSlot, phase: str, why: str) -> Deny | None:
        """A hook that raised or timed out: its failure mode decides. Never the exception's text in a
        response or a log line (it may quote request data); only the hook, phase and error type."""
        allowed = slot.failure_mode == "allow"
        HOOK_FAILURES.labels(hook=slot.name, phase=phase, outcome="allowed" if allowed else "denied").inc()
        log.warning("hook %s failed in %s (%s); failure mode %s", slot.name, phase, why, slot.failure_mode)
        if allowed:
            return None
        return Deny("hook_error", status=STATUS_ERROR, error=f"hook {slot.name} {phase}: {why}")

    async def _finish(self, request: HookRequest, decision: Decision, runs: list[HookRun], *,
                      inputs: tuple[dict[str, Any], ...] = (), consumed: tuple[str, ...] = (),
                      summary: str = "") -> Verdict:
        """Every exit goes through here: the after hooks see every decision, early denies included."""
        if self._after:
            hook_times = {f"hook.{r.name}": r.seconds for r in runs}
            request = request.evolve(timings={**request.timings, **hook_times})
        for slot in self._after:
            started = time.perf_counter()
            outcome = "ok"
            try:
                call = slot.hook.after(request, decision)  # type: ignore[attr-defined]
                await (asyncio.wait_for(call, slot.timeout_s) if slot.timeout_s else call)
            except TimeoutError:
                outcome = "timeout"
            except Exception as exc:
                outcome = "error"
                log.debug("after hook %s raised %s", slot.name, type(exc).__name__)
            finally:
                elapsed = time.perf_counter() - started
                self._stages[slot.name].observe(elapsed)
                runs.append(HookRun(slot.name, "after", outcome, elapsed))
            if outcome != "ok":
                failed = self._failed(slot, "after", outcome)
                if failed is not None and decision.allow:
                    decision = _deny(failed)
        if not summary:
            summary = ", ".join(f"{a.kind} {a.name}" for a in request.actions)
        return Verdict(decision, request.subject, request.decision_id, inputs, _retry_after(decision, list(inputs)),
                       summary, consumed, tuple(runs), tuple(request.actions),
                       dict(request.extensions.get("_response_headers", {})), request.policy_revision)

    # --- the exchange's later stages (ext_proc) -------------------------------------------------

    @property
    def rewrites_bodies(self) -> bool:
        return bool(self._rewrite)

    @property
    def inspects_responses(self) -> bool:
        return bool(self._response)

    def rewrite_request(self, body: bytes, redact: Sequence[str]) -> bytes | None:
        """Carry out `redact` on a request body: each rewrite hook in order; None if nothing changed.
        Raises what a hook raises: the caller (ext_proc) refuses the request then."""
        changed = False
        for slot in self._rewrite:
            started = time.perf_counter()
            out = slot.hook.rewrite(body, redact)  # type: ignore[attr-defined]
            self._stages[slot.name].observe(time.perf_counter() - started)
            if out is not None:
                body, changed = out, True
        return body if changed else None

    def response_processors(self, decision_id: str, path: str, subject: Subject, actions: Sequence[ParsedAction],
                            budget: Mapping[str, Any] | None = None) -> list[tuple[str, ResponseProcessor]]:
        policy = self._policy  # the response is judged by one set, even if a reload lands meanwhile
        context = ResponseContext(decision_id, path, subject, tuple(actions),
                                  ask=lambda q: self.ask(subject, q, decision_id, policy), revision=policy.label,
                                  budget=dict(budget or {}))
        out: list[tuple[str, ResponseProcessor]] = []
        for slot in self._response:
            processor = slot.hook.response(context)  # type: ignore[attr-defined]
            if processor is not None:
                out.append((slot.name, processor))
        return out

    async def record_response(self, decision_id: str, path: str, subject: Subject, actions: Sequence[ParsedAction],
                              decision: Decision) -> None:
        """What became of the backend's answer (passed, redacted, withheld), through the after hooks,
        so the audit log holds response decisions too. Raises when an after hook in deny mode failed:
        the caller (ext_proc) then refuses the response."""
        request = HookRequest(decision_id, "ext_proc", "", path, "", {}, subject, tuple(actions), phase="response",
                              request_id=decision_id, policy_revision=self._policy.label)
        verdict = await self._finish(request, decision, [])
        if decision.allow and not verdict.decision.allow:
            raise RuntimeError(f"response of decision {decision_id} could not be recorded")

    async def settle(self, decision_id: str, tenant: str, model: str, input_tokens: int | None,
                     output_tokens: int | None) -> None:
        """The backend's reported usage for an exchange (None: unreadable), for hooks that settle
        what they reserved (the budget hook)."""
        for slot in self.hooks:
            settle = getattr(slot.hook, "settle", None)
            if settle is not None:
                await settle(decision_id, tenant, model, input_tokens, output_tokens)

    async def ask(self, subject: Subject, question: PolicyQuestion, decision_id: str = "",
                  policy: PolicySet | None = None) -> Decision:
        """The policy, asked about a response (`context.phase` "response", with its findings) or about
        one tool of a listing (`context.phase` "list", no arguments)."""
        action = question.action
        request = AgentRequest(
            subject=subject, action=Action(action.kind, action.name),
            resource=Resource(action.resource_type, action.resource_id, None),
            arguments=action.arguments if question.phase == "response" else {},
            findings=tuple(question.findings),
            context={"time": datetime.now(UTC).isoformat(), "request_id": decision_id, "phase": question.phase})
        return await (policy or self._policy).backend.evaluate(request.to_input())

    # --- shadow mode ----------------------------------------------------------------------------

    def _shadow_compare(self, request: HookRequest, inputs: Sequence[Mapping[str, Any]],
                        decisions: Sequence[Decision]) -> None:
        """Ask the shadow candidate about the inputs the active set just decided, in a task the
        answer does not wait for. Bounded: under overload, decisions go unshadowed (and counted)."""
        candidate = self.shadow
        if candidate is None or not decisions:
            return
        if len(self._shadow_tasks) >= MAX_PENDING_SHADOW:
            shadow_mode.SKIPPED.inc()
            return
        task = asyncio.create_task(self._run_shadow(candidate, request, list(inputs[:len(decisions)]),
                                                    list(decisions)))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _run_shadow(self, candidate: PolicySet, request: HookRequest, inputs: list[Mapping[str, Any]],
                          decisions: list[Decision]) -> None:
        await asyncio.sleep(0)  # let the active answer go out first
        recorders = [r for r in (getattr(slot.hook, "record_shadow", None) for slot in self.hooks) if callable(r)]
        for index, (policy_input, active) in enumerate(zip(inputs, decisions, strict=True)):
            answer = await candidate.backend.evaluate(policy_input)
            kinds = shadow_mode.flips(active, answer)
            shadow_mode.count(kinds)
            if not kinds:
                continue
            record = shadow_mode.candidate_answer(answer, candidate.label, kinds, index)
            for recorder in recorders:
                try:
                    await recorder(request, active, record)
                except Exception as exc:  # a flip that cannot be recorded is logged; nothing is enforced
                    log.warning("shadow flip of decision %s not recorded: %s", request.decision_id,
                                type(exc).__name__)

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


def _enrich(request: HookRequest, name: str, result: Enrichment) -> HookRequest:
    n = len(request.actions)
    findings = [list(request.findings[i]) if i < len(request.findings) else [] for i in range(n)]
    for i, extra in enumerate(result.findings[:n]):
        findings[i].extend(extra)
    extensions = dict(request.extensions)
    if result.data is not None:
        extensions[name] = dict(result.data)
    if result.budget:
        extensions["_budget"] = tuple(result.budget[:n])
    if result.response_headers:
        extensions["_response_headers"] = {**extensions.get("_response_headers", {}), **result.response_headers}
    return request.evolve(findings=tuple(tuple(f) for f in findings), extensions=extensions)


def _declared_charset(content_type: str) -> str:
    """The `charset` parameter of a Content-Type, lower-cased ("" when none is declared)."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _deny(result: Deny) -> Decision:
    return Decision.deny(result.reason, status=result.status, error=result.error or None, detail=result.detail)


def _stated_subject(policy_input: Mapping[str, Any]) -> Subject:
    s = policy_input.get("subject") or {}
    return Subject(id=str(s.get("id") or "anonymous"), roles=tuple(s.get("roles") or ()), tenant=s.get("tenant"),
                   claims=dict(s.get("claims") or {}), authenticated=bool(s.get("authenticated", False)))


def _malformed(exc: ProtocolError) -> Decision:
    # ProtocolError messages are written for clients (no parser internals): say what was wrong.
    return Decision.deny("malformed_request", status=STATUS_BAD_REQUEST, error=str(exc), detail=str(exc))


def _observe(stage: Any, started: float) -> float:
    """Record a stage's time in its histogram; return it (seconds)."""
    elapsed = time.perf_counter() - started
    stage.observe(elapsed)
    return elapsed


def _retry_after(decision: Decision, inputs: list[dict[str, Any]]) -> int | None:
    """Seconds until a rate-limited caller may retry, when the budget figures in the input say."""
    if decision.allow or decision.status != STATUS_RATE_LIMITED or not inputs:
        return None
    budget = inputs[-1].get("budget")
    value = budget.get("retry_after_s") if isinstance(budget, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
