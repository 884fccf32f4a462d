"""The after-hooks stage: every decision, early denies included, passes every after hook (budget
release, audit append). A hook in `deny` failure mode that fails turns an allow into a 503: nothing
it was meant to do is silently skipped.

An allow passes the hooks in the configured order, because a failing hook changes the decision the
later ones see (the audit hook, last by default, records the 503 that went out). A deny is final:
no hook's failure can change it, so its hooks run side by side, and a refused request's budget
release does not queue behind its audit record's fsync (or the other way round).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.model import Decision
from agentgov.engine.pipeline.before import deny_decision
from agentgov.engine.pipeline.bounded import bounded
from agentgov.engine.pipeline.failures import hook_failed
from agentgov.engine.pipeline.types import HookRun

log = logging.getLogger("agentgov.governor")


class AfterStage:
    def __init__(self, slots: Sequence[HookSlot], stages: dict[str, Any]) -> None:
        self.slots = [s for s in slots if s.after is not None]
        self._stages = stages

    async def run(self, request: HookRequest, decision: Decision, runs: list[HookRun]) -> tuple[HookRequest, Decision]:
        if not self.slots:
            return request, decision
        hook_times = {f"hook.{r.name}": r.seconds for r in runs}
        request = request.evolve(timings={**request.timings, **hook_times})
        if decision.allow or len(self.slots) == 1:
            for slot in self.slots:
                done = await self._run_one(slot, request, decision)
                runs.append(done)
                if done.outcome != "ok":
                    failed = hook_failed(slot, "after", done.outcome)
                    if failed is not None and decision.allow:
                        decision = deny_decision(failed)
            return request, decision
        side_by_side = await asyncio.gather(*(self._run_one(slot, request, decision) for slot in self.slots))
        for slot, done in zip(self.slots, side_by_side, strict=True):
            runs.append(done)  # in the configured order, whichever finished first
            if done.outcome != "ok":
                hook_failed(slot, "after", done.outcome)  # counted and logged; the deny stands
        return request, decision

    async def _run_one(self, slot: HookSlot, request: HookRequest, decision: Decision) -> HookRun:
        """One after hook, timed and bounded; its outcome is `ok`, `timeout` or `error`, never an exception."""
        assert slot.after is not None
        started = time.perf_counter()
        outcome = "ok"
        try:
            await bounded(slot.after(request, decision), slot.timeout_s)
        except TimeoutError:
            outcome = "timeout"
        except Exception as exc:
            outcome = "error"
            log.debug("after hook %s raised %s", slot.name, type(exc).__name__)
        elapsed = time.perf_counter() - started
        self._stages[slot.name].observe(elapsed)
        return HookRun(slot.name, "after", outcome, elapsed)
