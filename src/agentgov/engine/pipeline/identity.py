"""The identity stage: who is calling. Runs first, before the body is read; a missing or invalid
credential is an early 401 (the identity hook's answer), whatever the policy would say."""

from __future__ import annotations

from agentgov.engine.hooks.base import Deny, Enrichment, HookRequest
from agentgov.engine.hooks.identity import IdentityHook, IdentityVerifier
from agentgov.engine.hooks.registry import HookSlot, bind
from agentgov.engine.model import Decision
from agentgov.engine.pipeline.before import BeforeStage, deny_decision
from agentgov.engine.pipeline.types import HookRun

# Never handed to policy: credentials, and agentgov's own headers (which only agentgov may set).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})


class IdentityStage:
    def __init__(self, verifier: IdentityVerifier | None, before: BeforeStage) -> None:
        self.verifier = verifier
        self.slot: HookSlot | None = bind(IdentityHook(verifier)) if verifier else None
        self._before = before  # runs the slot with the same timing and failure handling as any hook
        # Headers the policy never sees: credentials, including the configured API-key header.
        self.hidden = CREDENTIAL_HEADERS | ({verifier.api_key_header} if verifier else set())

    async def run(self, request: HookRequest, runs: list[HookRun]) -> tuple[HookRequest, tuple[str, ...], Decision | None]:
        """The request with its verified subject, the credential headers it consumed, or an early deny."""
        if self.slot is None:
            return request, (), None
        result = await self._before.run_one(self.slot, request, runs)
        if isinstance(result, Deny):
            return request, (), deny_decision(result)
        if isinstance(result, Enrichment) and result.subject is not None:
            return request.evolve(subject=result.subject), result.consumed_headers, None
        return request, (), None
