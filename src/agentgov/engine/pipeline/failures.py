"""What a hook's failure turns into: its declared failure mode decides (the hook contract)."""

from __future__ import annotations

import logging

from agentgov.engine.errors import REASON_HOOK, Failure
from agentgov.engine.hooks.base import Deny
from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.metrics import HOOK_FAILURES

log = logging.getLogger("agentgov.governor")


def hook_failed(slot: HookSlot, phase: str, why: str) -> Deny | None:
    """A hook that raised or timed out. Never the exception's text in a response or a log line (it
    may quote request data); only the hook, phase and error type. None: the failure mode allows."""
    allowed = slot.failure_mode == "allow"
    HOOK_FAILURES.labels(hook=slot.name, phase=phase, outcome="allowed" if allowed else "denied").inc()
    log.warning("hook %s failed in %s (%s); failure mode %s", slot.name, phase, why, slot.failure_mode)
    if allowed:
        return None
    return Deny.failed(Failure.HOOK_ERROR, REASON_HOOK, error=f"hook {slot.name} {phase}: {why}")
