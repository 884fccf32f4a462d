"""The after stage's order: an allow passes the hooks one after another (a failure changes what the
later ones record); a deny is final, so its hooks run side by side and still each see the deny."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.hooks.registry import HookSlot, bind
from agentgov.engine.metrics import STAGE_LATENCY
from agentgov.engine.model import ANONYMOUS, Decision
from agentgov.engine.pipeline.after import AfterStage
from agentgov.engine.pipeline.types import HookRun


@dataclass
class Journal:
    events: list[str] = field(default_factory=list)
    seen: dict[str, bool] = field(default_factory=dict)


@dataclass
class Waiter:
    """Holds its after() until `release` is set: a slow store or a disk."""

    name: str
    journal: Journal
    release: asyncio.Event
    failure_mode: str = "deny"
    timeout_s: float | None = 5.0
    phases: frozenset[str] = frozenset({"after"})

    async def after(self, request: HookRequest, decision: Decision) -> None:
        self.journal.events.append(f"{self.name} start")
        await self.release.wait()
        self.journal.seen[self.name] = decision.allow
        self.journal.events.append(f"{self.name} end")


@dataclass
class Recorder:
    """Notes what it saw; with `fail`, raises after noting it."""

    name: str
    journal: Journal
    gate: asyncio.Event | None = None  # set when it starts: lets the waiter go
    fail: bool = False
    failure_mode: str = "deny"
    timeout_s: float | None = 5.0
    phases: frozenset[str] = frozenset({"after"})

    async def after(self, request: HookRequest, decision: Decision) -> None:
        self.journal.events.append(f"{self.name} start")
        self.journal.seen[self.name] = decision.allow
        if self.gate is not None:
            self.gate.set()
        if self.fail:
            raise RuntimeError("disk full")


def _stage(*slots: HookSlot) -> AfterStage:
    return AfterStage(slots, {s.name: STAGE_LATENCY.labels(stage=s.name) for s in slots})


def _request() -> HookRequest:
    return HookRequest(decision_id="d1", entry_point="ext_authz", method="POST", path="/mcp", host="",
                       headers={}, subject=ANONYMOUS, actions=())


def _run(stage: AfterStage, decision: Decision) -> tuple[Decision, list[HookRun]]:
    runs: list[HookRun] = []

    async def go() -> Decision:
        return (await stage.run(_request(), decision, runs))[1]

    return asyncio.run(asyncio.wait_for(go(), 10)), runs


def test_a_deny_runs_its_after_hooks_side_by_side() -> None:
    async def scenario() -> Journal:
        journal, gate = Journal(), asyncio.Event()
        # The first hook waits until the second has started: in order, this would never finish.
        stage = _stage(bind(Waiter("budget", journal, gate)), bind(Recorder("audit", journal, gate)))
        runs: list[HookRun] = []
        _, decision = await asyncio.wait_for(stage.run(_request(), Decision.deny("over_budget", status=429), runs), 5)
        assert (decision.allow, decision.status) == (False, 429)
        assert [(r.name, r.outcome) for r in runs] == [("budget", "ok"), ("audit", "ok")]  # configured order
        return journal

    journal = asyncio.run(scenario())
    assert journal.events == ["budget start", "audit start", "budget end"]
    assert journal.seen == {"budget": False, "audit": False}


def test_an_allow_runs_its_after_hooks_in_order_and_a_failure_reaches_the_later_ones() -> None:
    journal = Journal()
    stage = _stage(bind(Recorder("flaky", journal, fail=True)), bind(Recorder("audit", journal)))
    decision, runs = _run(stage, Decision(allow=True, status=200))
    assert (decision.allow, decision.status, decision.reasons) == (False, 503, ("hook_error",))
    assert journal.events == ["flaky start", "audit start"]
    assert journal.seen == {"flaky": True, "audit": False}  # the audit hook saw the 503 that went out
    assert [(r.name, r.outcome) for r in runs] == [("flaky", "error"), ("audit", "ok")]


def test_a_failing_hook_beside_others_leaves_the_deny_as_it_was() -> None:
    journal = Journal()
    stage = _stage(bind(Recorder("flaky", journal, fail=True)), bind(Recorder("audit", journal)))
    decision, runs = _run(stage, Decision.deny("tool_not_allowed"))
    assert (decision.allow, decision.status, decision.reasons) == (False, 403, ("tool_not_allowed",))
    assert [(r.name, r.outcome) for r in runs] == [("flaky", "error"), ("audit", "ok")]
    assert journal.seen == {"flaky": False, "audit": False}


def test_a_hook_beside_others_is_still_held_to_its_timeout() -> None:
    journal = Journal()
    stage = _stage(bind(Waiter("stuck", journal, asyncio.Event()), timeout_s=0.05), bind(Recorder("audit", journal)))
    decision, runs = _run(stage, Decision.deny("tool_not_allowed"))
    assert decision.reasons == ("tool_not_allowed",)
    assert [(r.name, r.outcome) for r in runs] == [("stuck", "timeout"), ("audit", "ok")]
