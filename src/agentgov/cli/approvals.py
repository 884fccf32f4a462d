"""`agentgov approvals list|show|approve|deny`: the people in the loop decide pending calls.

An approver authenticates like any caller (`--token JWT` or `--api-key KEY`, checked against the
configuration's identity settings), must hold one of the roles the policy named, and may not be
the one who asked (separation of duties). Each decision is an audit record in the hash-chained
log (its own chain, `<host>-approvals`), linked to the calls by the approval id.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from agentgov.cli.configured import with_store
from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.approvals.settings import ApprovalsConfigError, ApprovalSettings, settings_from_config
from agentgov.engine.approvals.store import Approval, ApprovalRefused, ApprovalStore, ApprovalStoreError
from agentgov.engine.approvals.stores import open_store
from agentgov.engine.config import Config, ConfigError, default_config_path, environment, resolve
from agentgov.engine.model import Subject

T = TypeVar("T")
STATUSES = ("pending", "approved", "denied", "expired", "used")


def _fail(message: str) -> SystemExit:
    click.echo(message, err=True)
    return SystemExit(EXIT_ERROR)


def _config(config_path: Path | None) -> tuple[Config, ApprovalSettings]:
    try:
        path = config_path or default_config_path()
        if path is None:
            raise ConfigError("no configuration found: give --config FILE (or AGENTGOV_CONFIG)")
        cfg = resolve(path, environment())
        if cfg.approvals is None:
            raise ConfigError(f"{path}: the configuration has no `approvals:` section")
        return cfg, settings_from_config(cfg.approvals)
    except (ConfigError, ApprovalsConfigError) as exc:
        raise _fail(f"config error: {exc}") from None


def _with_store(cfg: Config, settings: ApprovalSettings, work: Callable[[ApprovalStore], Awaitable[T]]) -> T:
    return with_store(lambda: open_store(settings.store, cfg.base), lambda store: store.close(), work,
                      ApprovalStoreError, "approvals store")


def _approver(cfg: Config, token: str | None, api_key: str | None) -> Subject:
    """The approver, verified as any caller is (never taken on their word)."""
    from agentgov.engine.config.build import build_identity
    from agentgov.engine.hooks.identity import IdentityError

    if bool(token) == bool(api_key):
        raise click.UsageError("authenticate with one of --token JWT or --api-key KEY")
    try:
        verifier = build_identity(cfg)
    except ConfigError as exc:
        raise _fail(f"config error: {exc}") from None
    if verifier is None:
        raise _fail("identity is off in this configuration: approvers cannot be authenticated")
    headers = {"authorization": f"Bearer {token}"} if token else {verifier.api_key_header: str(api_key)}
    try:
        subject = verifier.verify_headers(headers)
    except IdentityError as exc:
        raise _fail(f"not authenticated: {exc.reason}") from None
    if not subject.authenticated:
        raise _fail("not authenticated")
    return subject


def _when(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _show(approval: Approval, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(approval.to_dict(), indent=2, sort_keys=True))
        return
    a = approval
    click.echo(f"{a.id}  {a.status}\n  call       {a.kind} {a.name} by {a.subject} (tenant {a.tenant or '-'})\n"
               f"  arguments  {a.arguments}\n  reason     {a.reason}; approvers: {', '.join(a.approvers)}\n"
               f"  uses       {a.uses_left} of {a.uses} left, each within {a.ttl_s:g} s of the approval\n"
               f"  asked      {_when(a.created_at)} (decision {a.decision_id or '-'}); expires {_when(a.expires_at)}")
    if a.decided_by:
        click.echo(f"  decided    by {a.decided_by} at {_when(a.decided_at)}")


@click.group()
def approvals() -> None:
    """Calls the policy allows only once a person approves them (docs/approvals.md)."""


@approvals.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG")
@click.option("--status", type=click.Choice([*STATUSES, "all"]), default="pending", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_command(config_path: Path | None, status: str, fmt: str) -> None:
    """Approvals by status (pending first of all: what waits for a person)."""
    cfg, settings = _config(config_path)
    rows = _with_store(cfg, settings, lambda store: store.list(None if status == "all" else status))
    if fmt == "json":
        click.echo(json.dumps([a.to_dict() for a in rows], indent=2, sort_keys=True))
        return
    click.echo(f"{'id':28} {'status':9} {'subject':16} {'call':32} {'approvers':16} asked")
    for a in rows:
        click.echo(f"{a.id:28} {a.status:9} {a.subject[:16]:16} {(a.kind + ' ' + a.name)[:32]:32} "
                   f"{','.join(a.approvers)[:16]:16} {_when(a.created_at)}")


@approvals.command()
@click.argument("approval_id")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(approval_id: str, config_path: Path | None, fmt: str) -> None:
    """One approval: the exact call (with its arguments), who may decide, and what became of it."""
    cfg, settings = _config(config_path)
    approval = _with_store(cfg, settings, lambda store: store.get(approval_id))
    if approval is None:
        raise _fail(f"no approval {approval_id}")
    _show(approval, fmt)


def _decide(approval_id: str, config_path: Path | None, token: str | None, api_key: str | None,
            approve: bool) -> None:
    cfg, settings = _config(config_path)
    approver = _approver(cfg, token, api_key)

    async def work(store: ApprovalStore) -> Approval:
        return await store.decide(approval_id, approve, approver.id, approver.roles, time.time())

    try:
        approval = _with_store(cfg, settings, work)
    except ApprovalRefused as exc:
        _record(cfg, approval_id, approver, "refused", str(exc))
        raise _fail(f"refused: {exc}") from None
    _record(cfg, approval_id, approver, approval.status, "", approval)
    click.echo(f"{approval.id} {approval.status} by {approver.id}" +
               (f": {approval.uses} use(s) within {approval.ttl_s:g} s" if approve else ""))


def _record(cfg: Config, approval_id: str, approver: Subject, event: str, why: str,
            approval: Approval | None = None) -> None:
    """The decision (or the refused attempt) as a record of the approvals chain, when audit is on."""
    from agentgov.engine.hooks.audit.chain import AuditError, ChainWriter
    from agentgov.engine.hooks.audit.hook import AuditConfigError, chain_name
    from agentgov.engine.hooks.audit.hook import settings_from_config as audit_settings

    try:
        settings = audit_settings(cfg.audit, cfg.base)
    except AuditConfigError as exc:
        raise _fail(f"config error: {exc}") from None
    if settings is None:
        return
    body: dict[str, Any] = {
        "v": 1, "decision_id": secrets.token_hex(16), "time": datetime.now(UTC).isoformat(timespec="microseconds"),
        "entry_point": "approvals", "phase": "approval",
        "subject": {"id": approver.id, "tenant": approver.tenant, "roles": list(approver.roles),
                    "authenticated": approver.authenticated},
        "actions": [{"kind": approval.kind, "name": approval.name, "resource_type": "tool",
                     "resource_id": approval.name}] if approval else [],
        "allow": event == "approved", "status": 200 if event in ("approved", "denied") else 403,
        "reasons": [f"approval_{event}"] + ([why[:200]] if why else []),
        "approval": {"id": approval_id, "event": event, "by": approver.id,
                     **({"requested_by": approval.subject, "arguments_sha256": approval.arguments_sha256,
                         "policy_revision": approval.revision} if approval else {})},
    }

    async def append() -> None:
        writer = ChainWriter(settings.directory, chain_name(0).rsplit("-w", 1)[0] + "-approvals")
        for _ in range(100):  # another approver's command may hold the chain for a moment
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

    try:
        asyncio.run(append())
    except (AuditError, OSError) as exc:
        raise _fail(f"the decision was taken but could not be recorded: {exc}") from None


_AUTH = [click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                      envvar="AGENTGOV_CONFIG"),
         click.option("--token", help="The approver's JWT (verified against identity.issuers)."),
         click.option("--api-key", "api_key", help="The approver's API key (identity.api_keys).")]


def _with_auth(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_AUTH):
        fn = option(fn)
    return fn


@approvals.command()
@click.argument("approval_id")
@_with_auth
def approve(approval_id: str, config_path: Path | None, token: str | None, api_key: str | None) -> None:
    """Approve a pending call: it may then run its number of uses within the approval's TTL."""
    _decide(approval_id, config_path, token, api_key, approve=True)


@approvals.command()
@click.argument("approval_id")
@_with_auth
def deny(approval_id: str, config_path: Path | None, token: str | None, api_key: str | None) -> None:
    """Deny a pending call (final: the same call asked again opens a new request)."""
    _decide(approval_id, config_path, token, api_key, approve=False)
