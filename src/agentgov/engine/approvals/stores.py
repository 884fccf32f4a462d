"""Which approvals store a configuration names: SQLite beside the config by default, Redis for a fleet."""

from __future__ import annotations

from pathlib import Path

from agentgov.engine.approvals.store import ApprovalStore, SqliteApprovalStore


def open_store(store: str, base: Path) -> ApprovalStore:
    if store.startswith(("redis://", "rediss://")):
        from agentgov.engine.approvals.redis_store import RedisApprovalStore

        return RedisApprovalStore(store)
    path = Path(store.removeprefix("sqlite:///")) if store.startswith("sqlite:///") else base / "approvals.sqlite3"
    return SqliteApprovalStore(path if path.is_absolute() else base / path)
