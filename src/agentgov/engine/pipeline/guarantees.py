"""The guarantees stage: what hooks enforce whatever the policy says.

A hook may attach a deny to its enrichment (`Enrichment.enforce`): an exhausted budget (429), a
secret in the request (403 `secret_detected`). The policy is asked all the same, so its own deny
(a forbidden tool, 403) keeps precedence and its reasons; when it allows, the first enforced deny,
in hook order, is the answer. A policy that forgets to read `input.budget` or `input.pii` can
therefore not let an exhausted caller or a leaked key through; a deployment that wants the policy
to decide turns it off per hook (`budgets.enforce: policy`, `pii.secrets: policy`).
"""

from __future__ import annotations

from agentgov.engine.hooks.base import Deny, HookRequest
from agentgov.engine.model import Decision
from agentgov.engine.pipeline.before import deny_decision


def enforced(request: HookRequest) -> tuple[str, Deny] | None:
    """The first deny a hook enforces on this request (hook name, deny), if any."""
    pending: tuple[tuple[str, Deny], ...] = request.extensions.get("_enforce", ())
    return pending[0] if pending else None


def apply(decision: Decision, request: HookRequest) -> tuple[Decision, HookRequest]:
    """The policy's decision, unless it allows and a hook enforces a deny. The enforced deny's
    `retry_after_s` is kept for the answer (a 429's Retry-After)."""
    if not decision.allow:
        return decision, request
    pending = enforced(request)
    if pending is None:
        return decision, request
    _, deny = pending
    if deny.retry_after_s is not None:
        request = request.evolve(extensions={**request.extensions, "_retry_after": deny.retry_after_s})
    return deny_decision(deny), request
