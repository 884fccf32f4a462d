"""Approvals in Redis, for a fleet: every approval of one call lives in one hash (field: approval id,
value: the approval as JSON), so `take` is one Lua script over one key, atomic on the server and
exact whichever node or worker runs it. A second hash maps ids to their call, for the approvers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agentgov.engine.approvals.binding import Binding
from agentgov.engine.approvals.store import (
    Approval,
    ApprovalRefused,
    ApprovalStoreError,
    Taken,
    _values,
    check_decision,
    new_id,
)
from agentgov.engine.model import ApprovalSpec

PREFIX = "{agentgov}:approvals:"
KEEP_S = 40 * 86400  # an approval's record is kept this long after its last change

# KEYS[1]: the call's hash. ARGV: now, the new approval (JSON) to open if nothing else answers, keep.
_TAKE = """
local now = tonumber(ARGV[1])
local used, pending, expired = nil, nil, {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local id, doc = flat[i], cjson.decode(flat[i + 1])
  if (doc.status == 'pending' or doc.status == 'approved') and doc.expires_at <= now then
    doc.status = 'expired'
    redis.call('HSET', KEYS[1], id, cjson.encode(doc))
    expired[#expired + 1] = id
  elseif doc.status == 'approved' and doc.uses_left > 0 then
    if used == nil or doc.created_at < used.created_at then used = doc end
  elseif doc.status == 'pending' then
    if pending == nil or doc.created_at < pending.created_at then pending = doc end
  end
end
local outcome, answer = 'requested', nil
if used ~= nil then
  answer = cjson.encode(used)
  used.uses_left = used.uses_left - 1
  if used.uses_left == 0 then used.status = 'used' end
  redis.call('HSET', KEYS[1], used.id, cjson.encode(used))
  outcome = 'used'
elseif pending ~= nil then
  outcome, answer = 'pending', cjson.encode(pending)
else
  local doc = cjson.decode(ARGV[2])
  redis.call('HSET', KEYS[1], doc.id, ARGV[2])
  redis.call('HSET', KEYS[2], doc.id, KEYS[1])
  answer = ARGV[2]
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {outcome, answer, cjson.encode(expired)}
"""

# KEYS[1]: the call's hash. ARGV: id, now, status, by, expires_at. Only a pending, unexpired approval
# changes (compare and set): two approvers racing cannot both decide it.
_DECIDE = """
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return nil end
local doc = cjson.decode(text)
if doc.status ~= 'pending' or doc.expires_at <= tonumber(ARGV[2]) then return text end
doc.status, doc.decided_by, doc.decided_at, doc.expires_at = ARGV[3], ARGV[4], tonumber(ARGV[2]), tonumber(ARGV[5])
local out = cjson.encode(doc)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out
"""

# KEYS[1]: the call's hash. ARGV: id, now. Marks one pending or approved approval past its time
# expired and returns it; nil when it was not due (or another sweeper marked it first).
_EXPIRE = """
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return nil end
local doc = cjson.decode(text)
if (doc.status ~= 'pending' and doc.status ~= 'approved') or doc.expires_at > tonumber(ARGV[2]) then return nil end
doc.status = 'expired'
local out = cjson.encode(doc)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out
"""

_FIELDS = list(Approval.__dataclass_fields__)


def _encode(approval: Approval) -> str:
    doc = dict(zip(_FIELDS, _values(approval), strict=True))
    doc["approvers"] = list(approval.approvers)
    doc["decided_at"] = approval.decided_at if approval.decided_at is not None else False
    return json.dumps(doc)


def _decode(text: str) -> Approval:
    doc: dict[str, Any] = json.loads(text)
    doc["approvers"] = tuple(doc["approvers"])
    doc["decided_at"] = doc["decided_at"] or None
    return Approval(**{k: doc[k] for k in _FIELDS})


class RedisApprovalStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: Any = None

    def _client(self) -> Any:  # redis-py's asyncio types are loose; the scripts fix the shapes
        if self._redis is None:
            self._redis = aioredis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                            decode_responses=True)
        return self._redis

    def _error(self, exc: BaseException) -> ApprovalStoreError:
        return ApprovalStoreError(f"redis approvals store: {type(exc).__name__}: {exc}")

    async def take(self, binding: Binding, arguments: str, spec: ApprovalSpec, pending_ttl_s: float,
                   decision_id: str, now: float) -> Taken:
        fresh = Approval(new_id(), binding.key, binding.subject, binding.tenant, binding.kind, binding.name, arguments,
                         binding.arguments_sha256, binding.revision, spec.approvers, spec.reason, spec.uses, spec.uses,
                         spec.ttl_s or 0.0, "pending", now, now + pending_ttl_s, decision_id=decision_id)
        try:
            outcome, text, expired = await self._client().eval(
                _TAKE, 2, PREFIX + "b:" + binding.key, PREFIX + "ids", repr(now), _encode(fresh), KEEP_S)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return Taken(str(outcome), _decode(text), tuple(json.loads(expired) or ()))

    async def get(self, approval_id: str) -> Approval | None:
        try:
            key = await self._client().hget(PREFIX + "ids", approval_id)
            text = await self._client().hget(key, approval_id) if key else None
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return _decode(text) if text else None

    async def _everything(self) -> list[tuple[str, str, Approval]]:
        """(id, call hash, approval) of every approval still kept, read in one round trip after the
        index. Index entries whose call hash has expired (KEEP_S) are dropped: the index would
        otherwise grow for ever."""
        client = self._client()
        index: dict[str, str] = await client.hgetall(PREFIX + "ids")
        if not index:
            return []
        pipe = client.pipeline(transaction=False)
        for approval_id, key in index.items():
            pipe.hget(key, approval_id)
        texts = await pipe.execute()
        gone = [approval_id for approval_id, text in zip(index, texts, strict=True) if not text]
        if gone:
            await client.hdel(PREFIX + "ids", *gone)
        return [(approval_id, key, _decode(text)) for (approval_id, key), text in zip(index.items(), texts, strict=True)
                if text]

    async def list(self, status: str | None = None) -> list[Approval]:
        try:
            found = [approval for _, _, approval in await self._everything()]
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return sorted((a for a in found if status is None or a.status == status), key=lambda a: a.created_at)

    async def decide(self, approval_id: str, approve: bool, by: str, roles: Sequence[str], now: float) -> Approval:
        approval = check_decision(await self.get(approval_id), approval_id, by, roles, now)
        status = "approved" if approve else "denied"
        expires = now + approval.ttl_s if approve else approval.expires_at
        try:
            text = await self._client().eval(_DECIDE, 1, PREFIX + "b:" + approval.binding,
                                             approval_id, repr(now), status, by, repr(expires))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        decided = _decode(text)
        if decided.status != status or decided.decided_by != by:  # someone else decided first
            raise ApprovalRefused(f"approval {approval_id} is {decided.status}: decisions are final")
        return decided

    async def expire_due(self, now: float) -> tuple[Approval, ...]:
        """The approvals this call marked expired. Only those that look due are sent to the script,
        which marks each once (compare and set), whichever worker sweeps."""
        out = []
        try:
            for approval_id, key, approval in await self._everything():
                if approval.status in ("pending", "approved") and approval.expires_at <= now:
                    text = await self._client().eval(_EXPIRE, 1, key, approval_id, repr(now))
                    if text:
                        out.append(_decode(text))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        return tuple(out)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
