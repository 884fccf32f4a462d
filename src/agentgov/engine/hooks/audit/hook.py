"""The `audit` hook: every decision, early denies included, from every door, becomes one record in
a hash-chained log on disk before the answer goes out (docs/audit.md)."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from agentgov.engine.hooks.audit.chain import DEFAULT_MAX_FILE_BYTES, DURABILITY, ChainWriter, load_signing_key
from agentgov.engine.hooks.audit.record import decision_body
from agentgov.engine.hooks.audit.sinks import OpaHttpSink, SinkConfigError, sinks_from_config
from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.keys import unknown_keys
from agentgov.engine.model import Decision

RECORDS = Counter("agentgov_audit_records_total", "Audit records written, by entry point", ["entry_point"])
_KEYS = {"dir", "checkpoint_key_file", "checkpoint_every_s", "sinks", "max_file_bytes", "max_file_age_s",
         "durability"}


class AuditConfigError(ValueError):
    pass


@dataclass(frozen=True)
class AuditSettings:
    directory: Path
    signing_key_file: Path | None = None
    checkpoint_every_s: float = 10.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    sinks: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    max_file_age_s: float | None = None
    durability: str = "fsync"  # or "write" (docs/audit.md: what each survives)


def settings_from_config(doc: Mapping[str, Any], base: Path) -> AuditSettings | None:
    """The `audit:` section; None when there is no `dir` (the hook is off)."""
    problem = unknown_keys(doc, _KEYS, "audit.")
    if problem:
        raise AuditConfigError(problem)
    if not doc.get("dir"):
        if doc:
            raise AuditConfigError("audit needs `dir` (where the log is written); without it the hook is off")
        return None
    directory = base / str(doc["dir"])
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditConfigError(f"audit.dir {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise AuditConfigError(f"audit.dir {directory} is not writable")
    key_file = base / str(doc["checkpoint_key_file"]) if doc.get("checkpoint_key_file") else None
    if key_file is not None:
        load_signing_key(key_file)  # fail at start, naming the file, rather than at the first checkpoint
    every = doc.get("checkpoint_every_s", 10.0)
    if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
        raise AuditConfigError("audit.checkpoint_every_s must be a positive number")
    size = doc.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)
    if isinstance(size, bool) or not isinstance(size, int) or size < 4096:
        raise AuditConfigError("audit.max_file_bytes must be an integer of at least 4096")
    age = doc.get("max_file_age_s")
    if age is not None and (isinstance(age, bool) or not isinstance(age, int | float) or age <= 0):
        raise AuditConfigError("audit.max_file_age_s must be a positive number of seconds")
    durability = doc.get("durability", "fsync")
    if durability not in DURABILITY:
        raise AuditConfigError(f"audit.durability must be one of {', '.join(DURABILITY)} "
                               "(fsync: on disk before the answer; write: written before it, fsynced behind)")
    try:
        sinks_from_config(doc.get("sinks"))
    except SinkConfigError as exc:
        raise AuditConfigError(str(exc)) from None
    return AuditSettings(directory, key_file, float(every), size, tuple(doc.get("sinks") or ()),
                         float(age) if age is not None else None, str(durability))


def chain_name(worker: int) -> str:
    """One chain per worker per node: `<host>-w<index>` (files never interleave between processes)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:40] or "node"
    return f"{host}-w{worker}"


class AuditHook:
    name = "audit"
    phases = frozenset({"after"})
    failure_mode = "deny"  # a decision that cannot be recorded is not given
    timeout_s: float | None = 5.0  # a disk that stalls this long turns decisions into 503s

    def __init__(self, settings: AuditSettings, worker: int = 0) -> None:
        self.settings = settings
        key = load_signing_key(settings.signing_key_file) if settings.signing_key_file else None
        self.writer = ChainWriter(settings.directory, chain_name(worker), max_file_bytes=settings.max_file_bytes,
                                  signing_key=key, checkpoint_every_s=settings.checkpoint_every_s,
                                  max_file_age_s=settings.max_file_age_s, durability=settings.durability)
        self.sinks: list[OpaHttpSink] = sinks_from_config(list(settings.sinks) or None)
        for sink in self.sinks:
            sink.node = self.writer.chain
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self.writer.open()
        for sink in self.sinks:
            sink.start()
        self._started = True

    async def close(self) -> None:
        if not self._started:
            return
        await self.writer.close()
        for sink in self.sinks:
            await sink.close()

    async def after(self, request: HookRequest, decision: Decision) -> None:
        await self._append(decision_body(request, decision, phase=request.phase), request.entry_point)

    async def record_shadow(self, request: HookRequest, decision: Decision, candidate: Mapping[str, Any]) -> None:
        """A shadow flip: the active decision (the record itself, phase `shadow`) and what the
        candidate would have answered (`shadow`). `agentgov shadow report` reads these."""
        body = decision_body(request, decision, phase="shadow")
        body["shadow"] = dict(candidate)
        # Not offered to the sinks: they receive decisions, and a flip was never one.
        await self._append(body, request.entry_point, to_sinks=False)

    async def _append(self, body: dict[str, Any], entry_point: str, *, to_sinks: bool = True) -> None:
        if not self._started:
            await self.start()
        record = await self.writer.append(body)
        RECORDS.labels(entry_point=entry_point).inc()
        for sink in self.sinks if to_sinks else ():
            sink.offer(record)
