"""What every approver door (the CLI, the console) shares: a person is verified as any caller is,
and each decision they take (or attempt) is a record in the audit chain of approvals.

Kept out of the doors so the CLI and the console cannot disagree about who may decide or what
evidence a decision leaves.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agentgov.engine.approvals.store import Approval, ApprovalRefused, ApprovalStore
from agentgov.engine.config import Config, ConfigError
from agentgov.engine.model import Subject


class NotAuthenticated(ValueError):
    """The person could not be verified: the message says why (never the credential)."""


class NotRecorded(RuntimeError):
    """The decision was taken but its audit record could not be written."""


def verify_person(cfg: Config, *, token: str | None = None, api_key: str | None = None) -> Subject:
    """The person behind a JWT or an API key, verified against the configuration's identity settings
    (never taken on their word)."""
    from agentgov.engine.config.build import build_identity
    from agentgov.engine.hooks.identity import IdentityError

    if bool(token) == bool(api_key):
        raise NotAuthenticated("authenticate with one of a JWT or an API key")
    try:
        verifier = build_identity(cfg)
    except ConfigError as exc:
        raise NotAuthenticated(f"config error: {exc}") from None
    if verifier is None:
        raise NotAuthenticated("identity is off in this configuration: nobody can be authenticated")
    headers: Mapping[str, str] = {"authorization": f"Bearer {token}"} if token else \
        {verifier.api_key_header: str(api_key)}
    try:
        subject = verifier.verify_headers(headers)
    except IdentityError as exc:
        raise NotAuthenticated(f"not authenticated: {exc.reason}") from None
    if not subject.authenticated:
        raise NotAuthenticated("not authenticated")
    return subject


async def decide_recorded(cfg: Config, store: ApprovalStore, approval_id: str, approve: bool,
                          person: Subject) -> Approval:
    """Take an approver's decision and record it; a refused attempt is recorded too, then raised."""
    try:
        approval = await store.decide(approval_id, approve, person.id, person.roles, time.time())
    except ApprovalRefused as exc:
        await record(cfg, approval_id, person, "refused", str(exc))
        raise
    await record(cfg, approval_id, person, approval.status, "", approval)
    return approval


async def record(cfg: Config, approval_id: str, person: Subject, event: str, why: str,
                 approval: Approval | None = None) -> None:
    """The decision (or the refused attempt) as a record of the `<host>-approvals` chain, when audit
    is on."""
    from agentgov.engine.hooks.audit.chain import AuditError, ChainWriter
    from agentgov.engine.hooks.audit.hook import AuditConfigError, chain_name
    from agentgov.engine.hooks.audit.hook import settings_from_config as audit_settings

    try:
        settings = audit_settings(cfg.audit, cfg.base)
    except AuditConfigError as exc:
        raise NotRecorded(f"config error: {exc}") from None
    if settings is None:
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
    writer = ChainWriter(settings.directory, chain_name(0).rsplit("-w", 1)[0] + "-approvals")
    try:
        for _ in range(100):  # another approver may hold the chain for a moment
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
