"""The after-hooks stage: every decision, early denies included, passes every after hook (budget
debit, audit append). A hook in `deny` failure mode that fails turns an allow into a 503: nothing
it was meant to do is silently skipped."""

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
from agentgov.engine.pipeline.failures import hook_failed
from agentgov.engine.pipeline.types import HookRun

log = logging.getLogger("agentgov.governor")


class AfterStage:
    def __init__(self, slots: Sequence[HookSlot], stages: dict[str, Any]) -> None:
        self.slots = [s for s in slots if s.after is not None]
        self._stages = stages

    async def run(self, request: HookRequest, decision: Decision, runs: list[HookRun]) -> tuple[HookRequest, Decision]:
        if self.slots:
            hook_times = {f"hook.{r.name}": r.seconds for r in runs}
            request = request.evolve(timings={**request.timings, **hook_times})
        for slot in self.slots:
            assert slot.after is not None
            started = time.perf_counter()
            outcome = "ok"
            try:
                call = slot.after(request, decision)
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
                failed = hook_failed(slot, "after", outcome)
                if failed is not None and decision.allow:
                    decision = deny_decision(failed)
        return request, decision
