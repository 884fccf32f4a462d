"""ext_proc's later stages of the same exchange, beside the runner: rewrite the request body
(body-rewriting obligations), judge the backend's answer, record what became of it, and settle
reported usage. Each uses the same hooks and the same policy set that decided the request."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from agentgov.engine.hooks.base import HookRequest, PolicyQuestion, ResponseContext, ResponseProcessor
from agentgov.engine.hooks.registry import HookSlot
from agentgov.engine.model import Decision, Subject
from agentgov.engine.pipeline.after import AfterStage
from agentgov.engine.pipeline.policy import question_input
from agentgov.engine.pipeline.swap import PolicySlot
from agentgov.engine.policy.policy_set import PolicySet
from agentgov.engine.protocols.parsed import ParsedAction


class ExchangeStages:
    def __init__(self, hooks: Sequence[HookSlot], policies: PolicySlot, after: AfterStage,
                 stages: dict[str, Any]) -> None:
        self._rewrite = [s for s in hooks if s.rewrite is not None]
        self._response = [s for s in hooks if s.response is not None]
        self._settle = [s for s in hooks if s.settle is not None]
        self._policies = policies
        self._after = after
        self._stages = stages

    @property
    def rewrites_bodies(self) -> bool:
        return bool(self._rewrite)

    @property
    def inspects_responses(self) -> bool:
        return bool(self._response)

    def rewrite_request(self, body: bytes, redact: Sequence[str]) -> bytes | None:
        """Carry out `redact` on a request body: each rewrite hook in order; None if nothing changed.
        Raises what a hook raises: the caller (ext_proc) refuses the request then."""
        changed = False
        for slot in self._rewrite:
            assert slot.rewrite is not None
            started = time.perf_counter()
            out = slot.rewrite(body, redact)
            self._stages[slot.name].observe(time.perf_counter() - started)
            if out is not None:
                body, changed = out, True
        return body if changed else None

    def response_processors(self, decision_id: str, path: str, subject: Subject, actions: Sequence[ParsedAction],
                            budget: Mapping[str, Any] | None = None) -> list[tuple[str, ResponseProcessor]]:
        policy = self._policies.active  # the response is judged by one set, even if a reload lands meanwhile
        context = ResponseContext(decision_id, path, subject, tuple(actions),
                                  ask=lambda q: self.ask(subject, q, decision_id, policy), revision=policy.label,
                                  budget=dict(budget or {}))
        out: list[tuple[str, ResponseProcessor]] = []
        for slot in self._response:
            assert slot.response is not None
            processor = slot.response(context)
            if processor is not None:
                out.append((slot.name, processor))
        return out

    async def record_response(self, decision_id: str, path: str, subject: Subject, actions: Sequence[ParsedAction],
                              decision: Decision) -> None:
        """What became of the backend's answer (passed, redacted, withheld), through the after hooks,
        so the audit log holds response decisions too. Raises when an after hook in deny mode failed:
        the caller (ext_proc) then refuses the response."""
        request = HookRequest(decision_id=decision_id, entry_point="ext_proc", method="", path=path, host="",
                              headers={}, subject=subject, actions=tuple(actions), phase="response",
                              request_id=decision_id, policy_revision=self._policies.active.label)
        _, recorded = await self._after.run(request, decision, [])
        if decision.allow and not recorded.allow:
            raise RuntimeError(f"response of decision {decision_id} could not be recorded")

    async def settle(self, decision_id: str, tenant: str, model: str, input_tokens: int | None,
                     output_tokens: int | None) -> None:
        """The backend's reported usage for an exchange (None: unreadable), for hooks that settle
        what they reserved (the budget hook)."""
        for slot in self._settle:
            assert slot.settle is not None
            await slot.settle(decision_id, tenant, model, input_tokens, output_tokens)

    async def ask(self, subject: Subject, question: PolicyQuestion, decision_id: str = "",
                  policy: PolicySet | None = None) -> Decision:
        """The policy, asked about a response or about one tool of a listing."""
        return await (policy or self._policies.active).backend.evaluate(question_input(subject, question, decision_id))
