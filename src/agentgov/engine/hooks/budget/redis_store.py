"""Budgets in Redis, for several nodes (or many workers) sharing one count.

One Lua script reserves against every limit a request touches, atomically, on the Redis server's
clock (so nodes with skewed clocks still share one rolling window). Each bucket is a hash of
reservation id → "at,requests,tokens,cost,reserved_until"; expired reservations and usage that left
a rolling window are removed as the script passes. Every key carries the hash tag `{agentgov}`:
a multi-key script needs all its keys in one slot, so in Redis Cluster budgets live on one shard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agentgov.engine.hooks.budget.limits import Charge
from agentgov.engine.hooks.budget.store import Headroom, Reservation, UsageRow, aggregate, check

PREFIX = "{agentgov}:budget:"
RID_TTL_S = 40 * 86400

# A bucket is three keys: a hash of entries (rid → "at,requests,tokens,cost,expires_at") that also
# holds the running totals (@r, @t, @c), a sorted set of entry times (to drop what leaves a rolling
# window) and a sorted set of reservation expiries. Each call only touches what expired since the
# last one, so its cost does not grow with the traffic in the window.
_COMMON = """
local function parse(entry)
  local f = {}
  for v in string.gmatch(entry, '[^,]+') do f[#f + 1] = v end
  return tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), tonumber(f[5])
end
local function drop(h, times, expiries, rid)
  local entry = redis.call('HGET', h, rid)
  if entry then
    local _, req, tok, cost = parse(entry)
    redis.call('HINCRBY', h, '@r', -req)
    redis.call('HINCRBY', h, '@t', -tok)
    redis.call('HINCRBYFLOAT', h, '@c', -cost)
    redis.call('HDEL', h, rid)
  end
  redis.call('ZREM', times, rid)
  redis.call('ZREM', expiries, rid)
end
"""

# KEYS: per charge (hash, times, expiries), then the reservation's index set.
# ARGV: rid, ttl (-1: final at once), keep, then per charge: rolling seconds (0 = calendar),
# calendar since, requests, tokens, cost, and the caps (requests, tokens, cost; -1 = none).
_RESERVE = _COMMON + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rid, ttl, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = (#KEYS - 1) / 3
local used, fits = {}, 1
for i = 1, n do
  local h, times, expiries = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local b = 3 + (i - 1) * 8
  local rolling, since = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  if rolling > 0 then since = now - rolling end
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now)) do drop(h, times, expiries, old) end
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', times, '-inf', '(' .. since)) do drop(h, times, expiries, old) end
  local req = tonumber(redis.call('HGET', h, '@r') or '0')
  local tok = tonumber(redis.call('HGET', h, '@t') or '0')
  local cost = tonumber(redis.call('HGET', h, '@c') or '0')
  local first = redis.call('ZRANGE', times, 0, 0, 'WITHSCORES')
  local oldest = -1
  if #first == 2 then oldest = tonumber(first[2]) end
  local creq, ctok, ccost = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
  if (creq >= 0 and req + tonumber(ARGV[b + 3]) > creq) or (ctok >= 0 and tok + tonumber(ARGV[b + 4]) > ctok)
     or (ccost >= 0 and cost + tonumber(ARGV[b + 5]) > ccost + 1e-12) then fits = 0 end
  used[i] = {tostring(req), tostring(tok), tostring(cost), tostring(oldest)}
end
if fits == 1 then
  for i = 1, n do
    local h, times, expiries = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    local b = 3 + (i - 1) * 8
    local expires_at = 0
    if ttl >= 0 then expires_at = now + ttl end
    redis.call('HSET', h, rid, string.format('%.6f,%s,%s,%s,%.6f', now, ARGV[b + 3], ARGV[b + 4], ARGV[b + 5],
                                             expires_at))
    redis.call('HINCRBY', h, '@r', tonumber(ARGV[b + 3]))
    redis.call('HINCRBY', h, '@t', tonumber(ARGV[b + 4]))
    redis.call('HINCRBYFLOAT', h, '@c', ARGV[b + 5])
    redis.call('ZADD', times, now, rid)
    if ttl >= 0 then redis.call('ZADD', expiries, expires_at, rid) end
    for _, key in ipairs({h, times, expiries}) do redis.call('EXPIRE', key, keep) end
    redis.call('SADD', KEYS[#KEYS], h)
  end
  redis.call('EXPIRE', KEYS[#KEYS], keep)
end
return {tostring(now), fits, used}
"""

# KEYS[1]: the reservation's index set. ARGV: rid, mode (settle | confirm | release), tokens, cost.
_UPDATE = _COMMON + """
local buckets = redis.call('SMEMBERS', KEYS[1])
for _, h in ipairs(buckets) do
  local times, expiries = h .. ':t', h .. ':x'
  if ARGV[2] == 'release' then
    drop(h, times, expiries, ARGV[1])
  else
    local entry = redis.call('HGET', h, ARGV[1])
    if entry then
      local at, req, tok, cost = parse(entry)
      local ntok, ncost = tok, cost
      if ARGV[2] == 'settle' then
        if tok > 0 then ntok = tonumber(ARGV[3]) end
        if tok > 0 or cost > 0 then ncost = tonumber(ARGV[4]) end
      end
      redis.call('HINCRBY', h, '@t', ntok - tok)
      redis.call('HINCRBYFLOAT', h, '@c', ncost - cost)
      redis.call('HSET', h, ARGV[1], string.format('%.6f,%d,%d,%s,0', at, req, ntok, tostring(ncost)))
      redis.call('ZREM', expiries, ARGV[1])
    end
  end
end
if ARGV[2] == 'release' then redis.call('DEL', KEYS[1]) end
return #buckets
"""


def _bucket_keys(bucket: str) -> list[str]:
    h = PREFIX + "b:" + bucket
    return [h, h + ":t", h + ":x"]


class RedisStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: aioredis.Redis | None = None

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                            decode_responses=True)
        return self._redis

    async def reserve(self, rid: str, charges: Sequence[Charge], now: float, ttl_s: float | None) -> Reservation:
        from agentgov.engine.hooks.budget.store import StoreError

        keys = [k for c in charges for k in _bucket_keys(c.period.bucket)] + [PREFIX + "r:" + rid]
        args: list[Any] = [rid, -1 if ttl_s is None else ttl_s, RID_TTL_S]
        for c in charges:
            cap = c.limit
            args += [c.limit.rolling_s or 0, c.period.since, c.requests, c.tokens, repr(c.cost_usd),
                     -1 if cap.requests is None else cap.requests, -1 if cap.tokens is None else cap.tokens,
                     -1 if cap.cost_usd is None else repr(cap.cost_usd)]
        try:
            server_now, admitted, used = await self._client().eval(_RESERVE, len(keys), *keys, *args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis {self.url}: {type(exc).__name__}: {exc}") from exc
        at_now = float(server_now)
        headroom, exceeded, retry = [], [], []
        for charge, (req, tok, usd, oldest) in zip(charges, used, strict=True):
            first = float(oldest)
            fits, room, wait = check(charge, int(float(req)), int(float(tok)), float(usd),
                                     first if first >= 0 else None, at_now)
            headroom.append(room)
            if not fits:
                exceeded.append(charge.limit.name)
                retry.append(wait)
        if int(admitted) == 1:
            return Reservation(True, tuple(headroom))
        return Reservation(False, tuple(headroom), tuple(exceeded or ["budget"]), int(max(retry or [1.0]) + 0.999))

    async def _update(self, rid: str, mode: str, tokens: int = 0, cost_usd: float = 0.0) -> None:
        from agentgov.engine.hooks.budget.store import StoreError

        try:
            await self._client().eval(_UPDATE, 1, PREFIX + "r:" + rid, rid, mode, tokens, repr(cost_usd))
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis {self.url}: {type(exc).__name__}: {exc}") from exc

    async def settle(self, rid: str, tokens: int, cost_usd: float) -> None:
        await self._update(rid, "settle", tokens, cost_usd)

    async def confirm(self, rid: str) -> None:
        await self._update(rid, "confirm")

    async def release(self, rid: str) -> None:
        await self._update(rid, "release")

    async def usage(self, now: float, contains: str = "",
                    rolling: Mapping[str, int | None] | None = None) -> list[UsageRow]:
        rows: list[tuple[Any, ...]] = []
        client = self._client()
        async for key in client.scan_iter(match=PREFIX + "b:*"):
            if key.endswith((":t", ":x")):
                continue
            bucket = key[len(PREFIX) + 2:]
            if contains not in bucket:
                continue
            limit, key_value = bucket.split("|")[0], bucket.split("|")[1]
            entries: dict[Any, Any] = await client.hgetall(key)
            for field_name, value in entries.items():
                if str(field_name).startswith("@"):
                    continue
                at, req, tok, usd, reserved = str(value).split(",")
                if float(reserved) and float(reserved) < now:
                    continue
                rows.append((limit, key_value, bucket, float(at), int(req), int(tok), float(usd),
                             float(reserved) or None))
        return aggregate(rows, now, rolling)

    async def reset(self, contains: str) -> int:
        client = self._client()
        removed = 0
        async for key in client.scan_iter(match=PREFIX + "b:*"):
            if key.endswith((":t", ":x")) or contains not in key[len(PREFIX) + 2:]:
                continue
            removed += len([f for f in await client.hkeys(key) if not str(f).startswith("@")])
            await client.delete(key, key + ":t", key + ":x")
        return removed

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


__all__ = ["Headroom", "RedisStore"]
