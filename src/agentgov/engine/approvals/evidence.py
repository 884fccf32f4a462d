"""The evidence an approval leaves beyond the decisions themselves: each approver's decision (or
refused attempt) and each notification, as records of the `<host>-approvals` audit chain, linked by
the approval id. Shared by every door an approver uses (the CLI, the console) and by the worker
that notifies, so none of them can leave a different trail.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from agentgov.engine.approvals.store import Approval, ApprovalRefused, ApprovalStore
from agentgov.engine.hooks.audit.chain import AuditError, ChainWriter
from agentgov.engine.hooks.audit.hook import AuditSettings, chain_name
from agentgov.engine.model import Subject


class NotRecorded(RuntimeError):
    """The decision was taken but its audit record could not be written."""


async def decide_recorded(audit: AuditSettings | None, store: ApprovalStore, approval_id: str, approve: bool,
                          person: Subject) -> Approval:
    """Take an approver's decision and record it; a refused attempt is recorded too, then raised."""
    try:
        approval = await store.decide(approval_id, approve, person.id, person.roles, time.time())
    except ApprovalRefused as exc:
        await record(audit, approval_id, person, "refused", str(exc))
        raise
    await record(audit, approval_id, person, approval.status, "", approval)
    return approval


async def record(audit: AuditSettings | None, approval_id: str, person: Subject, event: str, why: str,
                 approval: Approval | None = None) -> None:
    """One step of an approval as a record of the `<host>-approvals` chain (nothing when audit is off)."""
    if audit is None:
        return
    body: dict[str, Any] = {
        "v": 1, "decision_id": secrets.token_hex(16), "time": datetime.now(UTC).isoformat(timespec="microseconds"),
        "entry_point": "approvals", "phase": "approval",
        "subject": {"id": person.id, "tenant": person.tenant, "roles": list(person.roles),
                    "authenticated": person.authenticated},
        "actions": [{"kind": approval.kind, "name": approval.name, "resource_type": "tool",
                     "resource_id": approval.name}] if approval else [],
        "allow": event == "approved", "status": 200 if event in ("approved", "denied") else 403,
        "reasons": [f"approval_{event}"] + ([why[:200]] if why else []),
        "approval": {"id": approval_id, "event": event, "by": person.id,
                     **({"requested_by": approval.subject, "arguments_sha256": approval.arguments_sha256,
                         "policy_revision": approval.revision} if approval else {})},
    }
    writer = ChainWriter(audit.directory, chain_name(0).rsplit("-w", 1)[0] + "-approvals")
    try:
        for _ in range(100):  # another approver, or a worker's notification, may hold the chain a moment
            try:
                writer.open()
                break
            except AuditError as exc:
                if "in use" not in str(exc):
                    raise
                await asyncio.sleep(0.05)
        else:
            raise AuditError("the approvals audit chain stayed in use")
        try:
            await writer.append(body)
        finally:
            await writer.close()
    except (AuditError, OSError) as exc:
        raise NotRecorded(f"the decision was taken but could not be recorded: {exc}") from None
