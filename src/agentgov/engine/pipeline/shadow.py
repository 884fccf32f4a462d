"""Shadow evaluation: the candidate policy set asked about the very inputs the active set just
decided, in a task the answer never waits for. Flips are counted and recorded by the hooks that
record them (the audit hook); nothing here is ever enforced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.model import Decision
from agentgov.engine.pipeline.swap import PolicySlot
from agentgov.engine.policy import shadow as shadow_mode
from agentgov.engine.policy.policy_set import PolicySet

log = logging.getLogger("agentgov.governor")
# Shadow evaluations waiting to run; beyond this many, new decisions are not shadowed (and counted):
# a candidate must never turn into a backlog that slows the active policy down.
MAX_PENDING_SHADOW = 256


class ShadowRunner:
    def __init__(self, policies: PolicySlot, hooks: Sequence[HookSlot]) -> None:
        self._policies = policies
        self._recorders = [s.record_shadow for s in hooks if s.record_shadow is not None]
        self.tasks: set[asyncio.Task[None]] = set()

    def compare(self, request: HookRequest, inputs: Sequence[Mapping[str, Any]], decisions: Sequence[Decision]) -> None:
        """Schedule the comparison. Bounded: under overload, decisions go unshadowed (and counted)."""
        candidate = self._policies.shadow
        if candidate is None or not decisions:
            return
        if len(self.tasks) >= MAX_PENDING_SHADOW:
            shadow_mode.SKIPPED.inc()
            return
        task = asyncio.create_task(self._run(candidate, request, list(inputs[:len(decisions)]), list(decisions)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, candidate: PolicySet, request: HookRequest, inputs: list[Mapping[str, Any]],
                   decisions: list[Decision]) -> None:
        await asyncio.sleep(0)  # let the active answer go out first
        for index, (policy_input, active) in enumerate(zip(inputs, decisions, strict=True)):
            answer = await candidate.backend.evaluate(policy_input)
            kinds = shadow_mode.flips(active, answer)
            shadow_mode.count(kinds)
            if not kinds:
                continue
            record = shadow_mode.candidate_answer(answer, candidate.label, kinds, index)
            for recorder in self._recorders:
                try:
                    await recorder(request, active, record)
                except Exception as exc:  # a flip that cannot be recorded is logged; nothing is enforced
                    log.warning("shadow flip of decision %s not recorded: %s", request.decision_id,
                                type(exc).__name__)

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
