"""The hash-chained, durable audit log: one chain per worker, files rotated by size, group commit.

Each record carries the hash of the one before it, so an edit, a deletion or a reordering breaks
the chain; a signed checkpoint of the chain head, written every few seconds and on shutdown, lets
`agentgov audit verify` notice a cut tail too, which a chain alone cannot show.

Durability (`durability`): with `fsync`, the default, `append` returns only after the record is on
disk (written and fsynced). Appends that arrive while a write is in flight wait for the next one, so
one fsync serves every decision that was waiting at that moment (group commit). The Check's answer
goes out after `append` returns. With `write`, `append` returns once the record is written to the
operating system (it survives the worker being killed, not the machine losing power) and a thread
of its own fsyncs behind the writes, so a disk's fsync stalls no longer hold answers back;
checkpoints then vouch only for what that thread has fsynced.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentgov.engine.hooks.audit.record import GENESIS, canonical, chained
from agentgov.engine.worker_thread import WorkerThread

FILE_PATTERN = re.compile(r"^(?P<chain>[A-Za-z0-9_.-]+)-(?P<first>\d{12})\.jsonl$")
CHECKPOINTS_SUFFIX = ".checkpoints.jsonl"
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DURABILITY = ("fsync", "write")

log = logging.getLogger("agentgov.audit")


class AuditError(RuntimeError):
    """The log cannot be written (or resumed): decisions must not go on unrecorded."""


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditError(f"audit.checkpoint_key_file {path}: cannot load an Ed25519 private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"audit.checkpoint_key_file {path}: not an Ed25519 key (agentgov audit keygen makes one)")
    return key


def public_key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw[:9]).decode()


def checkpoint_payload(chain: str, seq: int, head: str, at: str) -> bytes:
    return canonical({"chain": chain, "seq": seq, "hash": head, "time": at}).encode()


@dataclass
class _Pending:
    line: bytes
    done: asyncio.Future[None]
    head: tuple[int, str]  # this record's (seq, hash)


@dataclass
class ChainWriter:
    directory: Path
    chain: str
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    signing_key: Ed25519PrivateKey | None = None
    checkpoint_every_s: float = 10.0
    max_file_age_s: float | None = None  # also start a new file after this long (daily files, say)
    durability: str = "fsync"  # or "write": answer once written, fsync behind (see the module docstring)
    _opened_at: float = 0.0
    _seq: int = 0
    _head: str = GENESIS
    _fd: int = -1
    _size: int = 0
    _lock_fd: int = -1
    _pending: list[_Pending] = field(default_factory=list)
    _wakeup: asyncio.Event | None = None
    _flusher: asyncio.Task[None] | None = None
    _checkpointer: asyncio.Task[None] | None = None
    _checkpointed: tuple[int, str] = (0, GENESIS)
    _closed: bool = False
    # The (seq, hash) of the last record written and of the last one fsynced (with durability "fsync" the
    # two move together), and, for "write", the lock that keeps a file from being closed (rotation,
    # shutdown) while the syncing thread fsyncs it.
    _written: tuple[int, str] = (0, GENESIS)
    _synced: tuple[int, str] = (0, GENESIS)
    _fd_lock: threading.Lock = field(default_factory=threading.Lock)
    _sync_wanted: asyncio.Event | None = None
    _syncer: asyncio.Task[None] | None = None
    _sync_failed: str = ""  # set when an fsync behind the writes failed: later appends are refused
    # The threads the flusher's writes and (durability "write") the syncer's fsyncs run on: two, so an
    # fsync never holds up the next write.
    _write_thread: WorkerThread = field(default_factory=lambda: WorkerThread("agentgov-audit-write"))
    _sync_thread: WorkerThread = field(default_factory=lambda: WorkerThread("agentgov-audit-sync"))

    # --- lifecycle --------------------------------------------------------------------------------

    def open(self) -> None:
        """Take the chain (one writer per chain), resume it from its last record, start the tasks."""
        if self.durability not in DURABILITY:
            raise AuditError(f"audit durability must be one of {', '.join(DURABILITY)}, not {self.durability!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / f"{self.chain}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditError(f"audit chain {self.chain} in {self.directory} is in use by another process") from None
        files = chain_files(self.directory, self.chain)
        if files:
            self._resume(files[-1])
            self._open_file(files[-1])
        else:
            self._open_file(self._file_for(1))
        # What is signed already. A chain resumed after a crash may have records past its last
        # checkpoint: they are sealed now, not when traffic next comes (truncating them would
        # otherwise go unnoticed until then).
        self._checkpointed = self._last_checkpoint()
        self._written = self._synced = (self._seq, self._head)  # what is resumed was read back from the file
        if self.signing_key is not None:
            self._write_checkpoint()
        self._wakeup = asyncio.Event()
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"audit-flush-{self.chain}")
        if self.durability == "write":
            self._sync_wanted = asyncio.Event()
            self._syncer = asyncio.create_task(self._sync_loop(), name=f"audit-sync-{self.chain}")
        if self.signing_key is not None:
            self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name=f"audit-cp-{self.chain}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._flusher is not None:
            await self._flusher
        if self._syncer is not None and self._sync_wanted is not None:
            self._sync_wanted.set()
            await self._syncer
        self._write_thread.close()
        self._sync_thread.close()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
        await asyncio.to_thread(self._write_checkpoint)
        if self._fd >= 0:
            os.close(self._fd)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)

    def _resume(self, last: Path) -> None:
        """Continue after the last complete record. A record cut mid-line (the process died while
        writing it) was never acknowledged, so it is dropped; anything else wrong is refused."""
        data = last.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with last.open("r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
            data = data[:cut]
        lines = data.splitlines()
        if not lines:
            match = FILE_PATTERN.match(last.name)
            first = int(match["first"]) if match else 1
            if first > 1:
                self._resume_from_previous(first)
            return
        try:
            record = json.loads(lines[-1])
            self._seq, self._head = int(record["seq"]), str(record["hash"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"audit log {last} ends with a damaged record; run `agentgov audit verify "
                             f"{self.directory}` before starting") from None

    def _resume_from_previous(self, first: int) -> None:
        files = [f for f in chain_files(self.directory, self.chain) if _first_seq(f) < first]
        if files:
            self._resume(files[-1])

    def _file_for(self, first_seq: int) -> Path:
        return self.directory / f"{self.chain}-{first_seq:012d}.jsonl"

    def _open_file(self, path: Path) -> None:
        with self._fd_lock:
            if self._fd >= 0:
                if self.durability == "write":
                    os.fsync(self._fd)  # the file left behind is whole on disk before the next one starts
                os.close(self._fd)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._opened_at = time.monotonic()
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new file's name is durable too
        finally:
            os.close(dir_fd)

    # --- appending --------------------------------------------------------------------------------

    async def append(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Chain `body` and return once it is durable. Sequence numbers are given here, in call
        order on the event loop, and lines are written in the same order."""
        if self._closed or self._wakeup is None:
            raise AuditError("the audit log is closed")
        if self._sync_failed:
            # Written records may not reach the disk (after a failed fsync the kernel may drop them):
            # decisions stop being given rather than go on with a log that is not being kept.
            raise AuditError(f"audit fsync failed: {self._sync_failed}")
        self._seq += 1
        record, line = chained(body, chain=self.chain, seq=self._seq, prev=self._head)
        self._head = record["hash"]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(line.encode(), done, (self._seq, self._head)))
        self._wakeup.set()
        await done
        return record

    async def _flush_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await self._write_thread.run(self._write, [p.line for p in batch])
                except Exception as exc:  # every waiting decision learns it was not recorded
                    for p in batch:
                        if not p.done.done():
                            p.done.set_exception(AuditError(f"audit write failed: {type(exc).__name__}: {exc}"))
                    continue
                self._written = batch[-1].head
                if self._sync_wanted is None:
                    self._synced = self._written  # _write fsynced it
                else:
                    self._sync_wanted.set()
                for p in batch:
                    if not p.done.done():
                        p.done.set_result(None)
            if self._closed and not self._pending:
                return

    async def _sync_loop(self) -> None:
        """Durability `write`: fsync what was written, behind the answers, until the writer closes."""
        assert self._sync_wanted is not None
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            target = self._written
            if target != self._synced:
                try:
                    await self._sync_thread.run(self._sync)
                except OSError as exc:
                    self._sync_failed = exc.strerror or type(exc).__name__
                    log.error("audit fsync failed (%s): refusing decisions until restarted", self._sync_failed)
                else:
                    self._synced = target
            # Closing: done once the flusher has written its last batch and all of it is fsynced (or
            # an fsync failed: nothing more would reach the disk).
            flushed = self._closed and self._flusher is not None and self._flusher.done()
            if flushed and (self._written == self._synced or self._sync_failed):
                return

    def _sync(self) -> None:
        with self._fd_lock:
            os.fsync(self._fd)

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        too_old = self.max_file_age_s is not None and time.monotonic() - self._opened_at > self.max_file_age_s
        if self._size and (self._size + len(data) > self.max_file_bytes or too_old):
            first = json.loads(lines[0])["seq"]
            self._open_file(self._file_for(int(first)))
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.durability == "fsync":
            os.fsync(self._fd)
        self._size += len(data)

    # --- checkpoints ------------------------------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_every_s)
            await asyncio.to_thread(self._write_checkpoint)

    def _write_checkpoint(self) -> None:
        """Sign the durable head (only what is on disk: records still waiting are not vouched for)."""
        if self.signing_key is None:
            return
        seq, head = self._durable_head()
        if (seq, head) == self._checkpointed or seq == 0:
            return
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        signature = self.signing_key.sign(checkpoint_payload(self.chain, seq, head, at))
        line = canonical({"chain": self.chain, "seq": seq, "hash": head, "time": at,
                          "key_id": public_key_id(self.signing_key.public_key()),
                          "sig": base64.b64encode(signature).decode()}) + "\n"
        fd = os.open(self.directory / f"{self.chain}{CHECKPOINTS_SUFFIX}", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._checkpointed = (seq, head)

    def _last_checkpoint(self) -> tuple[int, str]:
        """The (seq, hash) the last complete checkpoint line signed, or the genesis."""
        path = self.directory / f"{self.chain}{CHECKPOINTS_SUFFIX}"
        try:
            lines = path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return 0, GENESIS
        for line in reversed(lines):
            if not line.endswith(b"\n"):
                continue  # cut mid-line by a crash: the one before it is the last written whole
            try:
                doc = json.loads(line)
                return int(doc["seq"]), str(doc["hash"])
            except (ValueError, KeyError, TypeError):
                return 0, GENESIS  # unreadable: sign the head again (verify reports the bad line)
        return 0, GENESIS

    def _durable_head(self) -> tuple[int, str]:
        """What a checkpoint may vouch for: the last record fsynced (not one still being written, and
        with durability "write" not one written but not yet fsynced)."""
        return self._synced


def chain_files(directory: Path, chain: str) -> list[Path]:
    files = [p for p in directory.glob(f"{chain}-*.jsonl")
             if (m := FILE_PATTERN.match(p.name)) and m["chain"] == chain]
    return sorted(files, key=_first_seq)


def _first_seq(path: Path) -> int:
    match = FILE_PATTERN.match(path.name)
    return int(match["first"]) if match else 0
