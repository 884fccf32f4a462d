"""The active policy set, and swapping it for another (a reload) or setting a shadow candidate.

One reference: every decision reads it once, so a check in flight finishes on the set it started
with, and a swap is one assignment."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.policy.policy_set import PolicySet


class PolicySlot:
    def __init__(self, policy: PolicySet, hooks: Sequence[HookSlot]) -> None:
        self.active = policy
        self.shadow: PolicySet | None = None  # a candidate evaluated beside the active set, never enforced
        self._vetting = [s for s in hooks if s.check_policy_data is not None]

    def swap(self, policy: PolicySet) -> None:
        """Make `policy` the active set. Hooks that read the policy's data (the budget hook's
        per-tenant caps) check it first and may refuse the set (ValueError); nothing changes then.
        The old set is not closed: checks in flight still use it (local engines hold no
        connections; the garbage collector frees it)."""
        commits: list[Callable[[], None]] = []
        if policy.data is not None:
            for slot in self._vetting:
                assert slot.check_policy_data is not None
                commits.append(slot.check_policy_data(policy.data))
        self.active = policy
        for commit in commits:
            commit()

    def set_shadow(self, policy: PolicySet) -> None:
        self.shadow = policy
