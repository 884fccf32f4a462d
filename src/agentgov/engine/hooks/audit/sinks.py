"""Ship audit records elsewhere, in OPA's decision-log format: to an HTTP endpoint that speaks OPA's
decision-log service API (`POST <url>/logs`, a gzip'd JSON array of events), and as OCSF events
for SIEMs (export only).

A sink never holds a decision up: records go into a bounded buffer after they are durable in the
local log (which stays the record of truth), and a background task sends them in batches, retrying
with backoff while the endpoint is down. A full buffer drops the newest records and counts them
(`agentgov_audit_sink_dropped_total`); `agentgov audit export` can resend anything from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from agentgov import __version__
from agentgov.engine.keys import unknown_keys

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("agentgov.audit.sink")
SENT = Counter("agentgov_audit_sink_sent_total", "Audit records delivered to a sink", ["sink"])
DROPPED = Counter("agentgov_audit_sink_dropped_total", "Audit records a full sink buffer dropped", ["sink"])
FAILURES = Counter("agentgov_audit_sink_failures_total", "Failed deliveries to a sink (retried)", ["sink"])
_KEYS = {"type", "url", "buffer_records", "batch_records", "flush_every_s", "timeout_s", "headers"}


class SinkConfigError(ValueError):
    pass


def opa_event(record: Mapping[str, Any], node: str = "agentgov") -> dict[str, Any]:
    """One record as an OPA decision-log event. `input` holds what was decided about (never raw
    request data, which agentgov does not keep); `result` is agentgov's decision document."""
    return {
        "labels": {"id": node, "version": __version__, "app": "agentgov"},
        "decision_id": record["decision_id"],
        "path": "agentgov/decision",
        "timestamp": record["time"],
        "requested_by": record.get("entry_point", ""),
        "input": {"subject": record.get("subject"), "actions": record.get("actions"),
                  "findings": record.get("findings"), "phase": record.get("phase"), "http": record.get("http")},
        "result": {"allow": record["allow"], "reasons": record["reasons"], "status": record["status"],
                   "obligations": record.get("obligations")},
        "bundles": {"agentgov": {"revision": (record.get("policy") or {}).get("revision", "")}},
        "metrics": {f"timer_{k}_ns": int(v * 1e6) for k, v in (record.get("latency_ms") or {}).items()},
        "agentgov": {"chain": record.get("chain"), "seq": record.get("seq"), "hash": record.get("hash"),
                     "request_id": record.get("request_id")},
    }


_SESSION_KINDS = {"mcp.session", "tool.list"}


def ocsf_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """OCSF 1.1: an agent's call as API Activity (class 6003); a session-level decision (MCP
    initialize, ping, tools/list, and identity failures) as Authorize Session (class 3003)."""
    allowed = bool(record["allow"])
    action = (record.get("actions") or [{}])[0]
    subject = record.get("subject") or {}
    when = datetime.fromisoformat(str(record["time"]))
    session = action.get("kind") in _SESSION_KINDS or record.get("status") == 401
    classes = ({"class_uid": 3003, "class_name": "Authorize Session", "category_uid": 3,
                "category_name": "Identity & Access Management", "activity_id": 1 if allowed else 2,
                "activity_name": "Assign Privileges" if allowed else "Other", "type_uid": 300301 if allowed else 300302}
               if session else
               {"class_uid": 6003, "class_name": "API Activity", "category_uid": 6,
                "category_name": "Application Activity", "activity_id": 99,
                "activity_name": action.get("kind", "other"), "type_uid": 600399})
    return {
        **classes,
        "time": int(when.timestamp() * 1000),
        "severity_id": 1 if allowed else 3, "severity": "Informational" if allowed else "Medium",
        "status_id": 1 if allowed else 2, "status": "Success" if allowed else "Failure",
        "status_code": str(record["status"]), "status_detail": ",".join(record["reasons"]),
        "disposition_id": 1 if allowed else 2, "disposition": "Allowed" if allowed else "Blocked",
        "actor": {"user": {"uid": subject.get("id"), "groups": [{"name": r} for r in subject.get("roles") or []],
                           "org": {"uid": subject.get("tenant")}}},
        "api": {"operation": action.get("name", ""), "service": {"name": action.get("resource_type", "")},
                "request": {"uid": record["decision_id"]}},
        "http_request": {"http_method": (record.get("http") or {}).get("method", ""),
                         "url": {"path": (record.get("http") or {}).get("path", "")}},
        "metadata": {"product": {"name": "agentgov", "vendor_name": "agentgov", "version": __version__},
                     "version": "1.1.0", "uid": record["decision_id"], "correlation_uid": record.get("request_id"),
                     "log_name": record.get("chain")},
        "unmapped": {"reasons": record["reasons"], "findings": record.get("findings"), "seq": record.get("seq"),
                     "hash": record.get("hash")},
    }


@dataclass
class OpaHttpSink:
    url: str
    buffer_records: int = 10_000
    batch_records: int = 500
    flush_every_s: float = 1.0
    timeout_s: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)
    node: str = "agentgov"
    _buffer: deque[dict[str, Any]] = field(default_factory=deque)
    _task: asyncio.Task[None] | None = None
    _wakeup: asyncio.Event | None = None
    _stopping: bool = False

    @property
    def name(self) -> str:
        return "opa_http"

    def offer(self, record: Mapping[str, Any]) -> None:
        if len(self._buffer) >= self.buffer_records:
            DROPPED.labels(sink=self.name).inc()
            return
        self._buffer.append(opa_event(record, self.node))
        if self._wakeup is not None and len(self._buffer) >= self.batch_records:
            self._wakeup.set()

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="audit-sink-opa-http")

    async def close(self, drain_s: float = 5.0) -> None:
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, drain_s)
            except TimeoutError:
                self._task.cancel()
                log.warning("audit sink %s: %d records not delivered at shutdown (they are in the audit log)",
                            self.url, len(self._buffer))

    async def _run(self) -> None:
        assert self._wakeup is not None
        import aiohttp  # here, not at import: a worker whose audit log has no sink never loads the HTTP client

        backoff = 0.5
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session:
            while True:
                if not self._buffer:
                    if self._stopping:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self.flush_every_s)
                    self._wakeup.clear()
                    continue
                batch = [self._buffer[i] for i in range(min(self.batch_records, len(self._buffer)))]
                if await self._send(session, batch):
                    for _ in batch:
                        self._buffer.popleft()
                    SENT.labels(sink=self.name).inc(len(batch))
                    backoff = 0.5
                    continue
                FAILURES.labels(sink=self.name).inc()
                if self._stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _send(self, session: aiohttp.ClientSession, batch: list[dict[str, Any]]) -> bool:
        import aiohttp

        body = gzip.compress(json.dumps(batch, separators=(",", ":")).encode())
        headers = {"content-type": "application/json", "content-encoding": "gzip", **self.headers}
        try:
            async with session.post(self.url.rstrip("/") + "/logs", data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return True
                log.warning("audit sink %s answered %d; retrying", self.url, response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("audit sink %s unreachable (%s); retrying", self.url, type(exc).__name__)
        return False


def sinks_from_config(doc: Any) -> list[OpaHttpSink]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise SinkConfigError("audit.sinks must be a list")
    out = []
    for i, entry in enumerate(doc):
        where = f"audit.sinks[{i}]"
        if not isinstance(entry, dict):
            raise SinkConfigError(f"{where} must be a mapping")
        problem = unknown_keys(entry, _KEYS)
        if problem:
            raise SinkConfigError(f"{where}: {problem}")
        if entry.get("type") != "opa_http":
            raise SinkConfigError(f"{where}.type must be opa_http (OPA's decision-log service API)")
        url = entry.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SinkConfigError(f"{where}.url must be an http(s) URL")
        numbers = {}
        for key, default in (("buffer_records", 10_000), ("batch_records", 500), ("flush_every_s", 1.0),
                             ("timeout_s", 5.0)):
            value = entry.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise SinkConfigError(f"{where}.{key} must be a positive number")
            numbers[key] = value
        headers = entry.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise SinkConfigError(f"{where}.headers must map names to strings")
        out.append(OpaHttpSink(url=url, buffer_records=int(numbers["buffer_records"]),
                               batch_records=int(numbers["batch_records"]), flush_every_s=float(numbers["flush_every_s"]),
                               timeout_s=float(numbers["timeout_s"]), headers=headers))
    return out
