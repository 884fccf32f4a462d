"""The before-hooks stage: each hook in the configured order sees the request (and what earlier
hooks added) and may enrich the policy input or answer early."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agentgov.engine.hooks.base import Deny, Enrichment, HookRequest
from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.model import Decision
from agentgov.engine.pipeline.bounded import bounded
from agentgov.engine.pipeline.failures import hook_failed
from agentgov.engine.pipeline.types import HookRun


class BeforeStage:
    def __init__(self, slots: Sequence[HookSlot], stages: dict[str, Any]) -> None:
        self.slots = [s for s in slots if s.before is not None]
        self._stages = stages  # per-hook latency histograms, by hook name

    async def run(self, request: HookRequest, runs: list[HookRun]) -> tuple[HookRequest, Decision | None]:
        """Run the before hooks in order, folding each enrichment into the request the next one sees."""
        for slot in self.slots:
            result = await self.run_one(slot, request, runs)
            if isinstance(result, Deny):
                return request, deny_decision(result)
            if isinstance(result, Enrichment):
                request = enrich(request, slot.name, result)
        return request, None

    async def run_one(self, slot: HookSlot, request: HookRequest, runs: list[HookRun]) -> Enrichment | Deny | None:
        assert slot.before is not None  # only slots with a before method are run here
        started = time.perf_counter()
        outcome = "ok"
        try:
            call = slot.before(request)
            result = await bounded(call, slot.timeout_s)
            if result is not None and not isinstance(result, Enrichment | Deny):
                raise TypeError(f"before() returned {type(result).__name__}, not Enrichment, Deny or None")
            if isinstance(result, Deny):
                outcome = "deny"
            return result
        except TimeoutError:
            outcome = "timeout"
            return hook_failed(slot, "before", "timed out")
        except Exception as exc:
            outcome = "error"
            return hook_failed(slot, "before", type(exc).__name__)
        finally:
            elapsed = time.perf_counter() - started
            self._stages[slot.name].observe(elapsed)
            runs.append(HookRun(slot.name, "before", outcome, elapsed))


def enrich(request: HookRequest, name: str, result: Enrichment) -> HookRequest:
    """`result` folded into the request: findings per action, the hook's data under its name,
    budget figures and client headers under agentgov's own (underscore) keys."""
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
    if result.enforce is not None:
        extensions["_enforce"] = (*extensions.get("_enforce", ()), (name, result.enforce))
    return request.evolve(findings=tuple(tuple(f) for f in findings), extensions=extensions)


def deny_decision(result: Deny) -> Decision:
    return Decision.deny(result.reason, status=result.status, error=result.error or None, detail=result.detail)
