"""The answer stage: a decision and what the stages learned become the `Verdict` a door renders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.model import STATUS_RATE_LIMITED, Decision
from agentgov.engine.pipeline.types import HookRun, Verdict


def verdict(request: HookRequest, decision: Decision, runs: Sequence[HookRun], *,
            inputs: tuple[dict[str, Any], ...] = (), consumed: tuple[str, ...] = (), summary: str = "") -> Verdict:
    if not summary:
        summary = ", ".join(f"{a.kind} {a.name}" for a in request.actions)
    enforced_retry = request.extensions.get("_retry_after")  # from a hook's enforced 429 (guarantees.py)
    retry = enforced_retry if isinstance(enforced_retry, int) else retry_after(decision, inputs)
    return Verdict(decision=decision, subject=request.subject, decision_id=request.decision_id, inputs=inputs,
                   retry_after_s=retry, action=summary, consumed_headers=consumed, hooks=tuple(runs),
                   actions=tuple(request.actions),
                   response_headers=dict(request.extensions.get("_response_headers", {})),
                   policy_revision=request.policy_revision,
                   stage_seconds={k: v for k, v in request.timings.items() if k in ("parse", "policy")})


def retry_after(decision: Decision, inputs: Sequence[dict[str, Any]]) -> int | None:
    """Seconds until a rate-limited caller may retry, when the budget figures in the input say."""
    if decision.allow or decision.status != STATUS_RATE_LIMITED or not inputs:
        return None
    budget = inputs[-1].get("budget")
    value = budget.get("retry_after_s") if isinstance(budget, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
