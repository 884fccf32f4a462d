"""`agentgov approvals list|show|approve|deny`: the people in the loop decide pending calls.

An approver authenticates like any caller (`--token JWT` or `--api-key KEY`, checked against the
configuration's identity settings), must hold one of the roles the policy named, and may not be
the one who asked (separation of duties). Each decision is an audit record in the hash-chained
log (its own chain, `<host>-approvals`), linked to the calls by the approval id.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click

from agentgov.cli.configured import with_store
from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.approvals.evidence import NotRecorded, decide_recorded
from agentgov.engine.approvals.settings import ApprovalsConfigError, ApprovalSettings, settings_from_config
from agentgov.engine.approvals.store import Approval, ApprovalRefused, ApprovalStore, ApprovalStoreError
from agentgov.engine.approvals.stores import open_store
from agentgov.engine.config import Config, ConfigError, default_config_path, environment, resolve
from agentgov.engine.config.people import NotAuthenticated, audit_of, verify_person
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
    if bool(token) == bool(api_key):
        raise click.UsageError("authenticate with one of --token JWT or --api-key KEY")
    try:
        return verify_person(cfg, token=token, api_key=api_key)
    except NotAuthenticated as exc:
        raise _fail(str(exc)) from None


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
    try:
        audit = audit_of(cfg)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    try:
        approval = _with_store(cfg, settings,
                               lambda store: decide_recorded(audit, store, approval_id, approve, approver))
    except ApprovalRefused as exc:
        raise _fail(f"refused: {exc}") from None
    except NotRecorded as exc:
        raise _fail(str(exc)) from None
    click.echo(f"{approval.id} {approval.status} by {approver.id}" +
               (f": {approval.uses} use(s) within {approval.ttl_s:g} s" if approve else ""))


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
