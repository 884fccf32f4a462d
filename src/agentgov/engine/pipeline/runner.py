"""The runner: composes the stages in their one order, for every door.

    identity → parse → before hooks → policy → after hooks → answer

Doors hand over an `Envelope` (or an action, or a stated input) and get back a `Verdict`. Nothing
here knows Envoy or gRPC. A hook's exception or timeout is handled by its declared failure mode
(the hook contract); anything else unexpected inside a decision becomes an `internal_error` deny
that still passes the after hooks, so it is audited like any other exit.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.errors import REASON_INTERNAL, Failure
from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.hooks.identity import IdentityVerifier
from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.metrics import STAGE_LATENCY
from agentgov.engine.model import ANONYMOUS, Decision, Subject
from agentgov.engine.pipeline import answer, guarantees, policy
from agentgov.engine.pipeline.after import AfterStage
from agentgov.engine.pipeline.approvals import ApprovalStage
from agentgov.engine.pipeline.before import BeforeStage
from agentgov.engine.pipeline.exchange import ExchangeStages
from agentgov.engine.pipeline.identity import IdentityStage
from agentgov.engine.pipeline.offered import OfferedTools
from agentgov.engine.pipeline.parse import PARSE_STAGE, malformed, observe, parse, refuse_body
from agentgov.engine.pipeline.shadow import ShadowRunner
from agentgov.engine.pipeline.swap import PolicySlot
from agentgov.engine.pipeline.types import Envelope, GovernorOptions, HookRun, Verdict
from agentgov.engine.policy.policy_set import PolicySet
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.parsed import ParsedAction
from agentgov.engine.telemetry.tracing import Tracing

log = logging.getLogger("agentgov.governor")


class Decider(Protocol):
    """What an enforcement point needs: a Governor here, or a remote decision service."""

    @property
    def wants_envoy_attributes(self) -> bool: ...

    @property
    def local(self) -> Governor | None:
        """The runner itself when decisions are made in this process (the decision service, the
        Data API, AuthZEN and ext_proc's response stages need it); None for a remote decider."""
        ...

    async def decide(self, env: Envelope) -> Verdict: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Service(Protocol):
    """Something that runs beside the decisions for the Governor's lifetime (a bundle reloader)."""

    name: str

    def describe(self) -> dict[str, Any]: ...

    async def start(self) -> bool: ...

    async def close(self) -> None: ...


# One way of deciding, given the request record, the hook runs so far and the policy set read once.
Stages = Callable[[HookRequest, list[HookRun], PolicySet], Awaitable[Verdict]]


class Governor:
    def __init__(self, policy_set: DecisionBackend | PolicySet, identity: IdentityVerifier | None,
                 options: GovernorOptions | None = None, hooks: Sequence[HookSlot] = (),
                 approvals: ApprovalStage | None = None) -> None:
        self.options = options or GovernorOptions()
        if not isinstance(policy_set, PolicySet):
            # A bare backend (remote OPA, tests): its identity is the configured revision, else a per-load id.
            policy_set = PolicySet(policy_set, revision=self.options.revision or uuid.uuid4().hex[:12])
        self.hooks = tuple(hooks)
        self.policies = PolicySlot(policy_set, self.hooks)
        self._services: list[Service] = []
        stages = {h.name: STAGE_LATENCY.labels(stage=h.name) for h in self.hooks}
        self.before = BeforeStage(self.hooks, stages)
        self.identity = identity  # the verifier (None: identity is off)
        self.identity_stage = IdentityStage(identity, self.before)
        if self.identity_stage.slot is not None:
            stages[self.identity_stage.slot.name] = STAGE_LATENCY.labels(stage=self.identity_stage.slot.name)
        self.after = AfterStage(self.hooks, stages)
        self.shadow_runner = ShadowRunner(self.policies, self.hooks)
        self.exchange = ExchangeStages(self.hooks, self.policies, self.after, stages)
        self.offered_tools = OfferedTools()
        # Without an approvals store, an allow that needs an approval is refused (approval_unavailable).
        self.approvals = approvals or ApprovalStage(None, None)
        self.tracing = Tracing(self.options.tracing) if self.options.tracing is not None else None

    # --- what doors and operators read ---------------------------------------------------------

    @property
    def local(self) -> Governor:
        return self

    @property
    def wants_envoy_attributes(self) -> bool:
        return self.options.input_format == "opa-envoy"

    @property
    def policy(self) -> PolicySet:
        """The active policy set. Read once per decision: a swap never changes a check in flight."""
        return self.policies.active

    @property
    def shadow(self) -> PolicySet | None:
        return self.policies.shadow

    @property
    def backend(self) -> DecisionBackend:
        return self.policies.active.backend

    @property
    def revision(self) -> str:
        return self.policies.active.label

    def swap(self, policy_set: PolicySet) -> None:
        self.policies.swap(policy_set)

    def set_shadow(self, policy_set: PolicySet) -> None:
        self.policies.set_shadow(policy_set)

    # --- lifecycle -------------------------------------------------------------------------------

    def attach(self, service: Service) -> None:
        """Run `service` (started by `start`, closed by `close`) for as long as this Governor."""
        self._services.append(service)

    def service_status(self) -> dict[str, dict[str, Any]]:
        """Each attached service's state, by name (health shows the bundles' here)."""
        return {service.name: service.describe() for service in self._services}

    async def start(self) -> None:
        """Start what hooks keep running (the audit log's writer, its sinks) and the attached
        services (bundle reloaders): inside the event loop."""
        if self.tracing is not None:
            self.tracing.start()
        for slot in self.hooks:
            if slot.start is not None:
                await slot.start()
        for service in self._services:
            await service.start()
        await self.approvals.start()

    async def close(self) -> None:
        for service in self._services:
            await service.close()
        # A reloader holds this Governor (its `swap`): without this the two would be a cycle, freed
        # by whichever thread's collection finds it, and regorus' engines refuse to be dropped off
        # the thread that made them (they would leak). Closed, they are freed where the last
        # reference goes.
        self._services.clear()
        await self.shadow_runner.drain()
        for slot in self.hooks:
            if slot.close is not None:
                await slot.close()
        await self.policies.active.backend.close()
        await self.approvals.close()
        if self.tracing is not None:
            self.tracing.close()

    # --- the doors' entry points -----------------------------------------------------------------

    async def decide(self, env: Envelope, *, entry_point: str = "ext_authz") -> Verdict:
        """An HTTP request as an enforcement point saw it: parse the protocol, then decide each action."""
        return await self._guarded(entry_point, lambda request, runs, ps: self._decide(env, None, request, runs, ps),
                                   env=env)

    async def decide_action(self, env: Envelope, action: ParsedAction, *,
                            entry_point: str = "decision_service") -> Verdict:
        """An action a caller described itself (the decision service's ActionRequest): no body to parse."""
        return await self._guarded(entry_point, lambda request, runs, ps: self._decide(env, [action], request, runs, ps),
                                   env=env)

    async def decide_stated(self, policy_input: Mapping[str, Any], *, entry_point: str = "data_api") -> Verdict:
        """A policy input a caller stated whole (OPA's Data API, AuthZEN). The subject is the caller's
        word (so the identity stage does not run; bind those doors where only trusted callers reach
        them); every other stage runs: the PII hook scans the arguments, after hooks see the decision."""
        subject = policy.stated_subject(policy_input)
        return await self._guarded(entry_point, lambda request, runs, ps: self._decide_stated(policy_input, request, runs, ps),
                                   subject=subject)

    async def refuse(self, entry_point: str, failure: Failure, reason: str, *, env: Envelope | None = None,
                     error: str = "", detail: str = "") -> Verdict:
        """A door that failed before it could ask for a decision (its request unreadable, or the door
        itself broken): the refusal still passes the after hooks, so it is audited with a decision id."""
        request = self._new_request(entry_point, env, ANONYMOUS, self.policies.active)
        runs: list[HookRun] = []
        return await self._finish(request, Decision.failed(failure, reason, error=error or None, detail=detail), runs)

    # --- the stages, composed ----------------------------------------------------------------------

    @staticmethod
    def _new_request(entry_point: str, env: Envelope | None, subject: Subject, policy_set: PolicySet) -> HookRequest:
        decision_id = secrets.token_hex(16)
        if env is None:
            return HookRequest(decision_id=decision_id, entry_point=entry_point, method="", path="", host="",
                               headers={}, subject=subject, actions=(), policy_revision=policy_set.label)
        return HookRequest(decision_id=decision_id, entry_point=entry_point, method=env.method, path=env.path,
                           host=env.host, headers=env.headers, subject=subject, actions=(), body=env.body,
                           request_id=env.request_id or decision_id, policy_revision=policy_set.label)

    async def _guarded(self, entry_point: str, run: Stages, *, env: Envelope | None = None,
                       subject: Subject = ANONYMOUS) -> Verdict:
        """Run a decision; an unexpected exception in any stage is an internal_error deny that is
        still audited (the after hooks see it) and carries its decision id to the door."""
        policy_set = self.policies.active  # read once: a swap never changes a check in flight
        request = self._new_request(entry_point, env, subject, policy_set)
        runs: list[HookRun] = []
        traced = self.tracing is not None and env is not None and self.tracing.sampled(env.headers)
        started_ns = time.time_ns() if traced else 0
        try:
            result: Verdict = await run(request, runs, policy_set)
        except Exception:
            log.exception("internal error, decision %s denied with 503", request.decision_id)
            result = await self._finish(request, Decision.failed(Failure.INTERNAL, REASON_INTERNAL), runs)
        if started_ns:
            self._trace(request, result, started_ns)
        return result

    def _trace(self, request: HookRequest, verdict: Verdict, started_ns: int) -> None:
        """The decision's span and its stages' (never argument values or PII: names, outcomes, ids)."""
        assert self.tracing is not None
        runs = verdict.hooks
        identity = [r for r in runs if r.phase == "before" and r.name == "identity"]
        before = [r for r in runs if r.phase == "before" and r.name != "identity"]
        after = [r for r in runs if r.phase == "after"]
        seconds = verdict.stage_seconds
        stages = [(r.name, r.seconds, r.outcome) for r in identity]
        if "parse" in seconds:
            stages.append(("parse", seconds["parse"], ""))
        stages += [(f"hook.{r.name}", r.seconds, r.outcome) for r in before]
        if "policy" in seconds:
            stages.append(("policy", seconds["policy"], ""))
        stages += [(f"hook.{r.name}", r.seconds, r.outcome) for r in after]
        decision = verdict.decision
        attributes: dict[str, Any] = {
            "agentgov.decision": "allow" if decision.allow else "deny", "agentgov.status": decision.status,
            "agentgov.decision_id": verdict.decision_id, "agentgov.entry_point": request.entry_point,
            "agentgov.policy.revision": verdict.policy_revision, "enduser.id": verdict.subject.id}
        if decision.reasons:
            attributes["agentgov.reason"] = decision.reasons[0]
        if request.method:
            attributes["http.request.method"] = request.method
            attributes["url.path"] = request.path.split("?", 1)[0]
        if verdict.actions:
            first = verdict.actions[0]
            attributes["agentgov.action"] = f"{first.kind} {first.name}"
            if first.kind == "llm.chat":
                attributes["gen_ai.operation.name"] = "chat"
                attributes["gen_ai.request.model"] = first.name
            elif first.kind == "tool.call":
                attributes["gen_ai.operation.name"] = "execute_tool"
                attributes["gen_ai.tool.name"] = first.name
        if decision.status >= 500:
            attributes["error.type"] = decision.reasons[0] if decision.reasons else "internal_error"
        self.tracing.record(headers=request.headers, started_ns=started_ns, ended_ns=time.time_ns(), stages=stages,
                            attributes=attributes)

    async def _decide(self, env: Envelope, given: Sequence[ParsedAction] | None, request: HookRequest,
                      runs: list[HookRun], policy_set: PolicySet) -> Verdict:
        request, consumed, early = await self.identity_stage.run(request, runs)
        if early is not None:
            return await self._finish(request, early, runs)
        refused = refuse_body(env, self.options)
        if refused is not None:
            return await self._finish(request, refused, runs, consumed=consumed)
        actions, refused, parse_s = parse(env, self.options, given)
        if refused is not None:
            return await self._finish(request, refused, runs, consumed=consumed)
        request = request.evolve(actions=tuple(actions), timings={"parse": parse_s})
        if self.options.input_format == "opa-envoy" and given is None:
            return await self._decide_opa_envoy(env, request, runs, consumed, policy_set)
        request, early = await self.before.run(request, runs)
        if early is not None:
            return await self._finish(request, early, runs, consumed=consumed)
        started = time.perf_counter()
        inputs = policy.agentgov_inputs(env, request, self.identity_stage.hidden)
        decisions: list[Decision] = []
        for policy_input in inputs:
            decision = await policy_set.backend.evaluate(policy_input)
            decisions.append(decision)
            if not decision.allow:
                break
        request = request.evolve(timings={**request.timings, "policy": observe(policy.POLICY_STAGE, started)})
        self.shadow_runner.compare(request, inputs, decisions)
        decision, request = guarantees.apply(policy.combine(decisions, self.options.can_redact), request)
        decision = await self.offered_tools.check(request.subject, actions, decision, policy_set, request.decision_id,
                                                  can_remove=self.options.can_redact)
        decision = await self.approvals.apply(request.subject, actions[:len(decisions)], decision, policy_set.label,
                                              request.decision_id)
        asked = inputs[:len(decisions)]
        return await self._finish(request, decision, runs, inputs=tuple(asked), consumed=consumed,
                                  summary=", ".join(f"{a.kind} {a.name}" for a in actions[:len(decisions)]))

    async def _decide_opa_envoy(self, env: Envelope, request: HookRequest, runs: list[HookRun],
                                consumed: tuple[str, ...], policy_set: PolicySet) -> Verdict:
        started = time.perf_counter()
        try:
            policy_input = policy.opa_envoy_document(env)
        except ProtocolError as exc:
            return await self._finish(request, malformed(exc), runs, consumed=consumed)
        finally:
            request = request.evolve(timings={**request.timings, "input": observe(PARSE_STAGE, started)})
        if not request.actions and env.body:
            # A body agentgov's parsers refused (OPA-Envoy policies judge it anyway): hooks see it as text.
            text = env.body.decode("utf-8", "replace")
            route = f"{env.method} {env.path.split('?', 1)[0]}"
            request = request.evolve(actions=(ParsedAction(kind="http", name=route, resource_type="route",
                                                           resource_id=env.path, texts=(("body", text),)),))
        verdict = await self._decide_envoy_input(request, policy_input, runs, policy_set)
        return replace(verdict, consumed_headers=consumed)

    async def _decide_stated(self, policy_input: Mapping[str, Any], request: HookRequest,
                             runs: list[HookRun], policy_set: PolicySet) -> Verdict:
        if self.options.input_format == "opa-envoy":
            return await self._decide_envoy_input(request, dict(policy_input), runs, policy_set)
        parsed, server = policy.stated_action(policy_input)
        request = request.evolve(host=server, actions=(parsed,))
        request, early = await self.before.run(request, runs)
        if early is not None:
            return await self._finish(request, early, runs)
        document = policy.stated_input(policy_input, request)
        decision = await policy_set.backend.evaluate(document)
        self.shadow_runner.compare(request, (document,), [decision])
        decision, request = guarantees.apply(decision, request)
        decision = await self.approvals.apply(request.subject, (parsed,), decision, policy_set.label,
                                              request.decision_id)
        return await self._finish(request, decision, runs, inputs=(document,))

    async def _decide_envoy_input(self, request: HookRequest, policy_input: dict[str, Any], runs: list[HookRun],
                                  policy_set: PolicySet) -> Verdict:
        request, early = await self.before.run(request, runs)
        if early is not None:
            return await self._finish(request, early, runs)
        policy_input = policy.with_agentgov_section(policy_input, request)
        started = time.perf_counter()
        decision = await policy_set.backend.evaluate(policy_input)
        request = request.evolve(timings={**request.timings, "policy": observe(policy.POLICY_STAGE, started)})
        self.shadow_runner.compare(request, (policy_input,), [decision])
        decision, request = guarantees.apply(decision, request)
        # The path without its query string: queries can carry personal data, and this ends up in logs.
        summary = f"http {request.method} {request.path.split('?', 1)[0]}"
        return await self._finish(request, decision, runs, inputs=(policy_input,), summary=summary)

    async def _finish(self, request: HookRequest, decision: Decision, runs: list[HookRun], *,
                      inputs: tuple[dict[str, Any], ...] = (), consumed: tuple[str, ...] = (),
                      summary: str = "") -> Verdict:
        """Every exit goes through here: the after hooks see every decision, early denies included."""
        request, decision = await self.after.run(request, decision, runs)
        return answer.verdict(request, decision, runs, inputs=inputs, consumed=consumed, summary=summary)
