"""The tools an LLM request offers the model are governed like the tools an agent calls: each is put
to the same policy as a `tool.call` (phase `list`: no arguments yet). Those the caller may not call
are removed from the request by ext_proc before it is forwarded (the `remove_tools` obligation), or,
where no body can be rewritten (no ext_proc), the request is refused (`tool_not_allowed`). A model
that is never offered a tool cannot ask for it; a model that calls one anyway is caught in its
answer (hooks/model_tools.py).

Answers are cached per policy revision, subject and tool, as the `tools/list` filter does."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agentgov.engine.errors import Failure
from agentgov.engine.hooks.base import PolicyQuestion
from agentgov.engine.model import Decision, Subject
from agentgov.engine.pipeline.policy import question_input
from agentgov.engine.policy.policy_set import PolicySet
from agentgov.engine.protocols.parsed import ParsedAction

REASON = "tool_not_allowed"
CACHE_TTL_S = 60.0
CACHE_SIZE = 50_000


class OfferedTools:
    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, bool]] = OrderedDict()

    async def check(self, subject: Subject, actions: Sequence[ParsedAction], decision: Decision,
                    policy_set: PolicySet, decision_id: str, *, can_remove: bool) -> Decision:
        """`decision` if every offered tool may be called by `subject`; else, with `can_remove`, the
        decision obliged to remove the others, or a 403 naming them."""
        if not decision.allow:
            return decision
        refused: list[str] = []
        for action in actions:
            for tool in action.tools if action.kind == "llm.chat" else ():
                if tool.name not in refused and not await self._may_call(subject, tool.name, policy_set, decision_id):
                    refused.append(tool.name)
        if not refused:
            return decision
        if can_remove:
            kept = decision.obligations
            return replace(decision, obligations=replace(kept, remove_tools=tuple(refused)))
        shown = ", ".join(name[:64] for name in refused[:10]) + (" …" if len(refused) > 10 else "")
        return Decision.failed(Failure.FORBIDDEN, REASON,
                               detail=f"the request offers the model tools the caller may not call: {shown}")

    async def _may_call(self, subject: Subject, tool: str, policy_set: PolicySet, decision_id: str) -> bool:
        key = (policy_set.label, subject.id, subject.tenant, subject.roles, subject.authenticated, tool)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        question = PolicyQuestion("list", ParsedAction("tool.call", tool, "tool", tool, protocol="llm"))
        allowed = (await policy_set.backend.evaluate(question_input(subject, question, decision_id))).allow
        self._cache[key] = (now + CACHE_TTL_S, allowed)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return allowed
