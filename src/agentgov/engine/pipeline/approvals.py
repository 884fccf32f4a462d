"""The approvals stage: an allow that carries `obligations.approval` stands only for a call a person
approved. The call is bound to its subject, tenant, action, canonical arguments and (by default) the
policy revision; one use of a matching approval is spent, or the call is refused with the id of the
approval it waits for (docs/approvals.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from agentgov.engine.approvals.binding import Binding, argument_hash, canonical_arguments
from agentgov.engine.approvals.notify import Notifier, Recorder
from agentgov.engine.approvals.settings import ApprovalSettings
from agentgov.engine.approvals.store import ApprovalStore, ApprovalStoreError, Taken
from agentgov.engine.errors import Failure
from agentgov.engine.model import ApprovalNote, ApprovalSpec, Decision, Subject
from agentgov.engine.protocols.parsed import ParsedAction

log = logging.getLogger("agentgov.approvals")
REASON = "approval_required"
POLL_S = 0.25


class ApprovalStage:
    def __init__(self, settings: ApprovalSettings | None, store: ApprovalStore | None,
                 notifier: Notifier | None = None, recorder: Recorder | None = None) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier  # tells the approvers of each new request (approvals.webhooks)
        self.recorder = recorder  # writes an approval's steps to the audit log (None: audit is off)
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Sweep expiries in the background: an approval nobody asked about again still leaves its
        `expired` record (each expiry is marked once by the store, whichever worker sweeps)."""
        if self.store is not None and self.settings is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="approvals-sweeper")

    async def _sweep_forever(self) -> None:
        assert self.settings is not None
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            try:
                await self.sweep(time.time())
            except ApprovalStoreError as exc:
                log.warning("approvals: expiry sweep failed (%s); retrying in %g s", exc, self.settings.sweep_s)

    async def sweep(self, now: float) -> list[str]:
        """Mark what is due expired and record each; the ids marked."""
        if self.store is None:
            return []
        expired = await self.store.expire_due(now)
        for approval in expired:
            if self.recorder is not None:
                try:
                    await self.recorder(approval, "expired", "")
                except Exception as exc:  # logged; the expiry itself stands
                    log.warning("approval %s: expiry not recorded: %s", approval.id, exc)
        return [a.id for a in expired]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.notifier is not None:
            await self.notifier.drain()
        if self.store is not None:
            await self.store.close()

    async def apply(self, subject: Subject, actions: Sequence[ParsedAction], decision: Decision, revision: str,
                    decision_id: str) -> Decision:
        spec = decision.obligations.approval
        if spec is None or not decision.allow:
            return decision
        if self.store is None or self.settings is None:
            return Decision.failed(Failure.FORBIDDEN, "approval_unavailable",
                                   detail="the policy requires an approval, and no approvals store is configured")
        if len(actions) != 1:
            return Decision.failed(Failure.FORBIDDEN, "approval_unavailable",
                                   detail="a call that needs an approval cannot be sent in a batch")
        action = actions[0]
        binding = Binding(subject.id, subject.tenant or "", action.kind, action.name, argument_hash(action.arguments),
                          revision if self.settings.bind_revision else "")
        if spec.ttl_s is None:
            spec = replace(spec, ttl_s=self.settings.default_ttl_s)
        arguments = canonical_arguments(action.arguments)
        try:
            taken = await self._take(self.store, self.settings, binding, arguments, spec, decision_id)
        except ApprovalStoreError:
            return Decision.failed(Failure.UNAVAILABLE, "approval_store_unavailable",
                                   detail="the approvals store did not answer")
        status_url = self.settings.status_url_for(taken.approval.id)
        note = ApprovalNote(taken.approval.id, taken.outcome, taken.expired, status_url, action.protocol == "mcp",
                            action.rpc_id)
        if taken.outcome == "requested" and self.notifier is not None:
            self.notifier.requested(taken.approval, status_url)
        if taken.outcome == "used":
            return replace(decision, obligations=replace(decision.obligations, approval=None), approval=note)
        approvers = ", ".join(spec.approvers)
        return replace(Decision.failed(Failure.FORBIDDEN, REASON,
                                       detail=f"{spec.reason}: waiting for one of [{approvers}] to approve "
                                              f"{taken.approval.id}"), approval=note)

    @staticmethod
    async def _take(store: ApprovalStore, settings: ApprovalSettings, binding: Binding, arguments: str,
                    spec: ApprovalSpec, decision_id: str) -> Taken:
        taken = await store.take(binding, arguments, spec, settings.pending_ttl_s, decision_id, time.time())
        deadline = time.monotonic() + settings.wait_s
        # approvals.wait_s: hold the call open until it is decided (then spend it) or the bound passes.
        while taken.outcome != "used" and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            current = await store.get(taken.approval.id)
            if current is None or current.status in ("denied", "expired", "used"):
                break
            if current.status == "approved":
                return await store.take(binding, arguments, spec, settings.pending_ttl_s, decision_id, time.time())
        return taken
