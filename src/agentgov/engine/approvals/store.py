"""Where approvals are kept: SQLite for a node (the embedded default), Redis for a fleet.

`take` is the one operation a decision makes, atomic and exact under concurrency: spend one use of
an approved, unexpired approval for this call if there is one; else answer the pending request for
it; else open a new one. Two concurrent calls against a single-use approval: one spends it, the
other finds it used (final) and opens a request of its own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agentgov.engine.approvals.binding import Binding
from agentgov.engine.model import ApprovalSpec

FINAL = ("denied", "expired", "used")


class ApprovalStoreError(RuntimeError):
    """The store cannot answer: the call is refused (503), never allowed without its approval."""


class ApprovalRefused(ValueError):
    """An approver's decision that cannot be taken: the message says why (for the CLI and console)."""


@dataclass(frozen=True)
class Approval:
    id: str
    binding: str
    subject: str
    tenant: str
    kind: str
    name: str
    arguments: str  # the call's canonical arguments, for the approver to read (never logged)
    arguments_sha256: str
    revision: str
    approvers: tuple[str, ...]
    reason: str
    uses: int
    uses_left: int
    ttl_s: float
    status: str  # pending | approved | denied | expired | used
    created_at: float
    expires_at: float
    decided_by: str = ""
    decided_at: float | None = None
    decision_id: str = ""  # the decision that asked for it

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["approvers"] = list(self.approvers)
        out["arguments"] = json.loads(self.arguments)
        return out


@dataclass(frozen=True)
class Taken:
    outcome: str  # used | pending | requested
    approval: Approval
    expired: tuple[str, ...] = ()


class ApprovalStore(Protocol):
    async def take(self, binding: Binding, arguments: str, spec: ApprovalSpec, pending_ttl_s: float,
                   decision_id: str, now: float) -> Taken: ...

    async def get(self, approval_id: str) -> Approval | None: ...

    async def list(self, status: str | None = None) -> list[Approval]: ...

    async def decide(self, approval_id: str, approve: bool, by: str, roles: Sequence[str], now: float) -> Approval: ...

    async def expire_due(self, now: float) -> tuple[Approval, ...]: ...

    async def close(self) -> None: ...


def utc_instant(epoch: float) -> str:
    """An approval's instant as callers and approvers' tools read it: UTC, whole seconds, `Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_id() -> str:
    return "apr_" + secrets.token_hex(12)


def check_decision(approval: Approval | None, approval_id: str, by: str, roles: Sequence[str], now: float) -> Approval:
    """Why an approver may not decide this approval (raised), or the approval."""
    if approval is None:
        raise ApprovalRefused(f"no approval {approval_id}")
    if approval.status != "pending":
        raise ApprovalRefused(f"approval {approval_id} is {approval.status}: decisions are final")
    if approval.expires_at <= now:
        raise ApprovalRefused(f"approval {approval_id} expired unanswered")
    if by == approval.subject:
        raise ApprovalRefused("nobody approves their own request (separation of duties)")
    if not set(roles) & set(approval.approvers):
        raise ApprovalRefused(f"approving needs one of the roles {', '.join(approval.approvers)}")
    return approval


_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, binding TEXT NOT NULL, subject TEXT NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL,
    name TEXT NOT NULL, arguments TEXT NOT NULL, arguments_sha256 TEXT NOT NULL, revision TEXT NOT NULL,
    approvers TEXT NOT NULL, reason TEXT NOT NULL, uses INTEGER NOT NULL, uses_left INTEGER NOT NULL,
    ttl_s REAL NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
    decided_by TEXT NOT NULL DEFAULT '', decided_at REAL, decision_id TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (binding, status);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, created_at);
"""


def _row(row: Sequence[Any]) -> Approval:
    values = list(row)
    values[9] = tuple(json.loads(values[9]))
    return Approval(*values)


@dataclass
class SqliteApprovalStore:
    """One database file shared by the node's workers and the CLI; every change in a `BEGIN
    IMMEDIATE` transaction (approvals are rare: a thread hop each is fine). One connection per
    process, used by one thread at a time: a sqlite3 connection holds one transaction, so two
    decisions on two threads would otherwise nest theirs."""

    path: Path
    _db: sqlite3.Connection | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            return fn(*args)

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(self._locked, fn, *args)
        except sqlite3.Error as exc:
            raise ApprovalStoreError(f"sqlite {self.path}: {exc}") from exc

    def _transaction(self, work: Any) -> Any:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    async def take(self, binding: Binding, arguments: str, spec: ApprovalSpec, pending_ttl_s: float,
                   decision_id: str, now: float) -> Taken:
        def work(db: sqlite3.Connection) -> Taken:
            expired = [r[0] for r in db.execute(
                "SELECT id FROM approvals WHERE binding = ? AND status IN ('pending', 'approved') AND expires_at <= ?",
                (binding.key, now))]
            db.executemany("UPDATE approvals SET status = 'expired' WHERE id = ?", [(i,) for i in expired])
            row = db.execute("SELECT * FROM approvals WHERE binding = ? AND status = 'approved' "
                             "AND uses_left > 0 ORDER BY created_at LIMIT 1", (binding.key,)).fetchone()
            if row is not None:
                approval = _row(row)
                left = approval.uses_left - 1
                db.execute("UPDATE approvals SET uses_left = ?, status = ? WHERE id = ?",
                           (left, "approved" if left else "used", approval.id))
                return Taken("used", approval, tuple(expired))
            row = db.execute("SELECT * FROM approvals WHERE binding = ? AND status = 'pending' "
                             "ORDER BY created_at LIMIT 1", (binding.key,)).fetchone()
            if row is not None:
                return Taken("pending", _row(row), tuple(expired))
            approval = Approval(new_id(), binding.key, binding.subject, binding.tenant, binding.kind, binding.name,
                                arguments, binding.arguments_sha256, binding.revision, spec.approvers, spec.reason,
                                spec.uses, spec.uses, spec.ttl_s or 0.0, "pending", now, now + pending_ttl_s,
                                decision_id=decision_id)
            db.execute("INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       _values(approval))
            return Taken("requested", approval, tuple(expired))

        return await self._run(self._transaction, work)  # type: ignore[no-any-return]

    async def get(self, approval_id: str) -> Approval | None:
        def read() -> Approval | None:
            row = self._connect().execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
            return None if row is None else _row(row)
        return await self._run(read)  # type: ignore[no-any-return]

    async def list(self, status: str | None = None) -> list[Approval]:
        def read() -> list[Approval]:
            db = self._connect()
            rows = db.execute("SELECT * FROM approvals WHERE status = ? ORDER BY created_at", (status,)) if status \
                else db.execute("SELECT * FROM approvals ORDER BY created_at")
            return [_row(r) for r in rows]
        return await self._run(read)  # type: ignore[no-any-return]

    async def decide(self, approval_id: str, approve: bool, by: str, roles: Sequence[str], now: float) -> Approval:
        def work(db: sqlite3.Connection) -> Approval:
            row = db.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
            approval = check_decision(None if row is None else _row(row), approval_id, by, roles, now)
            status = "approved" if approve else "denied"
            expires = now + approval.ttl_s if approve else approval.expires_at
            db.execute("UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, expires_at = ? WHERE id = ?",
                       (status, by, now, expires, approval_id))
            return _row(db.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone())

        return await self._run(self._transaction, work)  # type: ignore[no-any-return]

    async def expire_due(self, now: float) -> tuple[Approval, ...]:
        """Mark every pending or approved approval past its time expired; the ones this call marked
        (so each expiry is recorded once, whichever worker sweeps)."""
        def work(db: sqlite3.Connection) -> tuple[Approval, ...]:
            rows = [_row(r) for r in db.execute(
                "SELECT * FROM approvals WHERE status IN ('pending', 'approved') AND expires_at <= ?", (now,))]
            db.executemany("UPDATE approvals SET status = 'expired' WHERE id = ?", [(a.id,) for a in rows])
            return tuple(replace(a, status="expired") for a in rows)

        return await self._run(self._transaction, work)  # type: ignore[no-any-return]

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _values(a: Approval) -> tuple[Any, ...]:
    return (a.id, a.binding, a.subject, a.tenant, a.kind, a.name, a.arguments, a.arguments_sha256, a.revision,
            json.dumps(list(a.approvers)), a.reason, a.uses, a.uses_left, a.ttl_s, a.status, a.created_at,
            a.expires_at, a.decided_by, a.decided_at, a.decision_id)


__all__ = ["FINAL", "Approval", "ApprovalRefused", "ApprovalStore", "ApprovalStoreError", "Taken"]
