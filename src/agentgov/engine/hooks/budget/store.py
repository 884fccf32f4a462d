"""Where budgets are counted: the store interface, and its SQLite implementation (the embedded
default, shared by every worker process of a node). Redis is in redis_store.py.

Every reservation is all-or-nothing across the limits a request touches, in one transaction: two
concurrent requests can never both take the last unit of a cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agentgov.engine.hooks.budget.limits import Charge
from agentgov.engine.worker_thread import WorkerThread

PURGE_AFTER_S = 40 * 86400  # settled usage older than the longest calendar window is dropped

# `entries` holds every charge (a sliding window sums those inside it). `totals` keeps each bucket's
# running sum, maintained by triggers in the same transaction as the change, so a calendar window
# (day, month) is checked with one row instead of a sum over every charge of the day: the cost of a
# check no longer grows with the traffic. A database made before `totals` existed is backfilled once.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    bucket TEXT NOT NULL, rid TEXT NOT NULL, limit_name TEXT NOT NULL, key TEXT NOT NULL,
    at REAL NOT NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL, cost REAL NOT NULL,
    reserved_until REAL, PRIMARY KEY (bucket, rid));
CREATE INDEX IF NOT EXISTS entries_bucket_at ON entries (bucket, at);
CREATE INDEX IF NOT EXISTS entries_rid ON entries (rid);
CREATE INDEX IF NOT EXISTS entries_reserved ON entries (reserved_until) WHERE reserved_until IS NOT NULL;
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS totals (
    bucket TEXT PRIMARY KEY, requests INTEGER NOT NULL, tokens INTEGER NOT NULL, cost REAL NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN
    INSERT INTO totals VALUES (NEW.bucket, NEW.requests, NEW.tokens, NEW.cost) ON CONFLICT (bucket) DO UPDATE
        SET requests = requests + NEW.requests, tokens = tokens + NEW.tokens, cost = cost + NEW.cost;
END;
CREATE TRIGGER IF NOT EXISTS entries_removed AFTER DELETE ON entries BEGIN
    UPDATE totals SET requests = requests - OLD.requests, tokens = tokens - OLD.tokens, cost = cost - OLD.cost
        WHERE bucket = OLD.bucket;
END;
CREATE TRIGGER IF NOT EXISTS entries_changed AFTER UPDATE OF requests, tokens, cost ON entries BEGIN
    UPDATE totals SET requests = requests - OLD.requests + NEW.requests, tokens = tokens - OLD.tokens + NEW.tokens,
        cost = cost - OLD.cost + NEW.cost WHERE bucket = NEW.bucket;
END;
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
INSERT INTO totals SELECT bucket, SUM(requests), SUM(tokens), SUM(cost) FROM entries
    WHERE NOT EXISTS (SELECT 1 FROM schema_version) GROUP BY bucket;
INSERT INTO schema_version SELECT 2 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
COMMIT;
"""


class StoreError(RuntimeError):
    """The store could not answer: the hook follows budgets.on_store_error."""


@dataclass(frozen=True)
class Headroom:
    """What is left of one limit after this request (None: the limit has no such cap)."""

    limit: str
    requests: int | None
    tokens: int | None
    cost_usd: float | None
    reset_s: float  # seconds until the whole window has turned over
    cap_requests: int | None = None
    cap_tokens: int | None = None


@dataclass(frozen=True)
class Reservation:
    admitted: bool
    headroom: tuple[Headroom, ...] = ()
    exceeded: tuple[str, ...] = ()  # limit names that refused
    retry_after_s: int | None = None


@dataclass(frozen=True)
class UsageRow:
    limit: str
    key: str
    bucket: str
    requests: int
    tokens: int
    cost_usd: float
    reserved: int  # of which still reservations (not settled)


def aggregate(rows: Sequence[tuple[Any, ...]], now: float = 0.0,
              rolling: Mapping[str, int | None] | None = None) -> list[UsageRow]:
    """(limit, key, bucket, at, requests, tokens, cost, reserved_until) rows → usage per bucket; with
    `rolling` (limit name → window seconds), only what is still inside each rolling window."""
    out: dict[str, list[Any]] = {}
    for limit, key, bucket, at, requests, tokens, cost_usd, reserved in rows:
        window = (rolling or {}).get(limit)
        if window is not None and float(at) < now - window:
            continue
        entry = out.setdefault(bucket, [limit, key, bucket, 0, 0, 0.0, 0])
        entry[3] += int(requests)
        entry[4] += int(tokens)
        entry[5] += float(cost_usd)
        entry[6] += 1 if reserved is not None else 0
    return [UsageRow(*v) for v in out.values()]


class BudgetStore(Protocol):
    async def reserve(self, rid: str, charges: Sequence[Charge], now: float, ttl_s: float | None) -> Reservation: ...

    async def settle(self, rid: str, tokens: int, cost_usd: float) -> None: ...

    async def release(self, rid: str) -> None: ...

    async def confirm(self, rid: str) -> None: ...

    async def usage(self, now: float, contains: str = "",
                    rolling: Mapping[str, int | None] | None = None) -> list[UsageRow]: ...

    async def reset(self, contains: str) -> int: ...

    async def close(self) -> None: ...


def check(charge: Charge, used_requests: int, used_tokens: int, used_cost: float, oldest: float | None,
          now: float) -> tuple[bool, Headroom, float]:
    """Whether `charge` fits what is used, the headroom after it, and when to retry if it does not."""
    limit = charge.limit
    fits = ((limit.requests is None or used_requests + charge.requests <= limit.requests)
            and (limit.tokens is None or used_tokens + charge.tokens <= limit.tokens)
            and (limit.cost_usd is None or used_cost + charge.cost_usd <= limit.cost_usd + 1e-12))
    taken = (charge.requests, charge.tokens, charge.cost_usd) if fits else (0, 0, 0.0)
    headroom = Headroom(
        limit.name,
        None if limit.requests is None else max(0, limit.requests - used_requests - taken[0]),
        None if limit.tokens is None else max(0, limit.tokens - used_tokens - taken[1]),
        None if limit.cost_usd is None else max(0.0, limit.cost_usd - used_cost - taken[2]),
        max(0.0, charge.period.reset_at - now), limit.requests, limit.tokens)
    rolling = limit.rolling_s
    retry = (oldest + rolling - now) if rolling is not None and oldest is not None else charge.period.reset_at - now
    return fits, headroom, max(1.0, retry)


def _statement(sql: str, params: tuple[Any, ...]) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        db.execute(sql, params)
    return run


@dataclass
class _Write:
    """One write waiting for the next batch: what to run inside the transaction, and who waits."""

    apply: Callable[[sqlite3.Connection], Any]
    done: asyncio.Future[Any]


@dataclass
class SqliteStore:
    """Writes are batched: every reservation, settlement and release that arrives while the previous
    batch is being written (or within one event-loop turn when none is) goes into one `BEGIN
    IMMEDIATE … COMMIT`. Each still runs whole and in order inside it, so each reservation is
    all-or-nothing and exact against what the ones before it took; a batch costs one lock and one
    commit however many decisions it serves. The WAL is checkpointed by a background thread (an
    automatic checkpoint would stall whichever reservation crossed the threshold: measured, it was
    the pipeline's p99), which also purges settled usage too old for any window."""

    path: Path
    synchronous: str = "normal"  # or "full": each batch's commit is fsynced (budgets.sqlite_synchronous)
    checkpoint_every_s: float = 0.5
    purge_every_s: float = 60.0
    _thread: WorkerThread = field(default_factory=lambda: WorkerThread("agentgov-budget"))  # every SQLite call
    _db: sqlite3.Connection | None = None
    _queue: list[_Write] = field(default_factory=list)
    _writing: bool = False
    _maintenance: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open_retrying()
            if self._maintenance is None:
                self._maintenance = threading.Thread(target=self._maintain, name="agentgov-budget-wal", daemon=True)
                self._maintenance.start()
        return self._db

    def _open_retrying(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes open a new database at once: switching it to WAL and creating the
        # schema can meet a lock SQLite does not wait on (it answers "locked" at once), so retry.
        deadline = time.monotonic() + 10
        while True:
            try:
                return self._open()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL" if self.synchronous == "full" else "PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the maintenance thread checkpoints instead
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _hand_over(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """`fn(*args)` on the store's thread; a store error once the store is closed (a deny upstream)."""
        try:
            return self._thread.run(fn, *args)
        except RuntimeError as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    async def _run(self, fn: Any, *args: Any) -> Any:
        call = self._hand_over(fn, *args)
        try:
            return await call
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    # --- batched writes ----------------------------------------------------------------------------

    async def _write(self, apply: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        write = _Write(apply, loop.create_future())
        self._queue.append(write)
        if not self._writing:
            self._writing = True
            loop.call_soon(self._flush, loop)  # after this turn: what else arrives in it joins the batch
        return await write.done

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            self._writing = False
            return
        try:
            written = self._hand_over(self._commit, [w.apply for w in batch])
        except StoreError as exc:  # closed: every write in the batch is refused, none left waiting
            for write in batch:
                if not write.done.done():
                    write.done.set_exception(exc)
            self._writing = False
            return

        def finished(future: asyncio.Future[list[Any]]) -> None:
            error = future.exception()
            results = future.result() if error is None else [error] * len(batch)
            for write, result in zip(batch, results, strict=True):
                if write.done.done():
                    continue
                if isinstance(result, BaseException):
                    message = f"sqlite {self.path}: {result}" if isinstance(result, sqlite3.Error) else str(result)
                    write.done.set_exception(StoreError(message) if isinstance(result, sqlite3.Error) else result)
                else:
                    write.done.set_result(result)
            self._flush(loop)  # what queued meanwhile is the next batch (or the writer goes idle)

        written.add_done_callback(finished)

    def _commit(self, applies: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """One transaction for the batch. A write that fails is undone alone (its savepoint) and
        answered with its error; the others are committed."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")  # one writer at a time, across every process on this node
        results: list[Any] = []
        try:
            for apply in applies:
                db.execute("SAVEPOINT one")
                try:
                    results.append(apply(db))
                    db.execute("RELEASE one")
                except sqlite3.Error as exc:
                    db.execute("ROLLBACK TO one")
                    db.execute("RELEASE one")
                    results.append(exc)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return results

    # --- background upkeep -------------------------------------------------------------------------

    def _maintain(self) -> None:
        """Checkpoint the WAL (PASSIVE: it never blocks a writer) and purge old usage, on a
        connection of its own. Failures are retried at the next round: upkeep never fails a decision."""
        try:
            db = self._open_retrying()
        except sqlite3.Error:
            return
        last_purge = time.monotonic()
        try:
            while not self._stop.wait(self.checkpoint_every_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if time.monotonic() - last_purge >= self.purge_every_s:
                        self._purge(db, time.time())
                        last_purge = time.monotonic()
                except sqlite3.Error:
                    continue
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    @staticmethod
    def _purge(db: sqlite3.Connection, now: float) -> None:
        """Settled usage older than any window, oldest first and a bounded slice at a time (rows are
        inserted in time order, so the oldest rowids are the candidates: no scan of the table)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries ORDER BY rowid LIMIT 2000)"
                       " AND reserved_until IS NULL AND at < ?", (now - PURGE_AFTER_S,))
            db.execute("DELETE FROM totals WHERE requests <= 0 AND tokens <= 0 AND cost <= 1e-9")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- the store interface -----------------------------------------------------------------------

    async def reserve(self, rid: str, charges: Sequence[Charge], now: float, ttl_s: float | None) -> Reservation:
        """`ttl_s` None: a charge nothing will settle later (a tool call), final at once unless released."""
        given = list(charges)
        return await self._write(lambda db: self._reserve(db, rid, given, now, ttl_s))  # type: ignore[no-any-return]

    @staticmethod
    def _reserve(db: sqlite3.Connection, rid: str, charges: list[Charge], now: float,
                 ttl_s: float | None) -> Reservation:
        db.execute("DELETE FROM entries WHERE reserved_until IS NOT NULL AND reserved_until < ?", (now,))
        headroom, exceeded, retry = [], [], []
        for charge in charges:
            if charge.limit.rolling_s is None:
                # A calendar window is a bucket of its own: its running total, one row (kept by triggers).
                row = db.execute("SELECT requests, tokens, cost, NULL FROM totals WHERE bucket = ?",
                                 (charge.period.bucket,)).fetchone() or (0, 0, 0.0, None)
            else:
                row = db.execute("SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(tokens), 0),"
                                 " COALESCE(SUM(cost), 0), MIN(at) FROM entries WHERE bucket = ? AND at >= ?",
                                 (charge.period.bucket, charge.period.since)).fetchone()
            fits, room, wait = check(charge, int(row[0]), int(row[1]), float(row[2]), row[3], now)
            headroom.append(room)
            if not fits:
                exceeded.append(charge.limit.name)
                retry.append(wait)
        if exceeded:
            return Reservation(False, tuple(headroom), tuple(exceeded), int(max(retry) + 0.999))
        db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bucket, rid) DO UPDATE"
                       " SET at = excluded.at, requests = excluded.requests, tokens = excluded.tokens,"
                       " cost = excluded.cost, reserved_until = excluded.reserved_until", [
            (c.period.bucket, rid, c.limit.name, c.period.bucket.split("|", 2)[1], now, c.requests, c.tokens,
             c.cost_usd, None if ttl_s is None else now + ttl_s) for c in charges])
        return Reservation(True, tuple(headroom))

    async def settle(self, rid: str, tokens: int, cost_usd: float) -> None:
        # Only entries that counted tokens are re-charged (a request-only limit stays at one request).
        await self._write(_statement("UPDATE entries SET tokens = CASE WHEN tokens > 0 THEN ? ELSE 0 END,"
                                     " cost = CASE WHEN cost > 0 OR tokens > 0 THEN ? ELSE 0 END,"
                                     " reserved_until = NULL WHERE rid = ?", (tokens, cost_usd, rid)))

    async def release(self, rid: str) -> None:
        await self._write(_statement("DELETE FROM entries WHERE rid = ?", (rid,)))

    async def confirm(self, rid: str) -> None:
        """Charge a reservation as it stands (no usage will come to settle it)."""
        await self._write(_statement("UPDATE entries SET reserved_until = NULL WHERE rid = ?", (rid,)))

    async def usage(self, now: float, contains: str = "",
                    rolling: Mapping[str, int | None] | None = None) -> list[UsageRow]:
        def query() -> list[tuple[Any, ...]]:
            return list(self._connect().execute(
                "SELECT limit_name, key, bucket, at, requests, tokens, cost, reserved_until FROM entries"
                " WHERE (reserved_until IS NULL OR reserved_until >= ?) AND bucket LIKE ? ORDER BY bucket",
                (now, f"%{contains}%")))
        return aggregate(await self._run(query), now, rolling)

    async def reset(self, contains: str) -> int:
        return await self._write(  # type: ignore[no-any-return]
            lambda db: int(db.execute("DELETE FROM entries WHERE bucket LIKE ?", (f"%{contains}%",)).rowcount))

    async def close(self) -> None:
        while self._writing:  # let the writes in flight finish
            await asyncio.sleep(0.001)

        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await self._run(shut)
        self._thread.close()
        self._stop.set()
        if self._maintenance is not None:
            await asyncio.to_thread(self._maintenance.join, 5)
