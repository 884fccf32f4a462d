"""Budgets in Redis, for several nodes (or many workers) sharing one count.

One Lua script reserves against every limit a request touches, atomically, on the Redis server's
clock (so nodes with skewed clocks still share one rolling window). Each bucket is a hash of
reservation id → "at,requests,tokens,cost,reserved_until"; expired reservations and usage that left
a rolling window are removed as the script passes.

A multi-key script needs all its keys in one hash slot. On a single server every key carries the
hash tag `{agentgov}`; on a Redis Cluster (redis_cluster.py) each bucket is tagged by its owner (the
tenant, by default), so a tenant's limits stay atomic together while tenants spread over the shards.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from agentgov.engine.hooks.budget.cluster_url import redact
from agentgov.engine.hooks.budget.limits import Charge
from agentgov.engine.hooks.budget.store import Headroom, Reservation, StoreError, UsageRow, aggregate, check

PREFIX = "{agentgov}:budget:"
# What the client raises when the store cannot answer (a cluster client's own errors are not RedisError).
FAILURES = (RedisError, RedisClusterException, OSError)
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
    -- `0 - x`, not `-x`: Lua prints -0 as "-0", which HINCRBY refuses as not an integer.
    redis.call('HINCRBY', h, '@r', 0 - req)
    redis.call('HINCRBY', h, '@t', 0 - tok)
    redis.call('HINCRBYFLOAT', h, '@c', 0 - cost)
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
-- A client that lost the reply retries the script: the reservation it already made stands.
local again = redis.call('HEXISTS', KEYS[1], rid) == 1
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
  if again then
    local _, r0, t0, c0 = parse(redis.call('HGET', h, rid) or '0,0,0,0,0')
    req, tok, cost = req - r0, tok - t0, cost - c0
  elseif (creq >= 0 and req + tonumber(ARGV[b + 3]) > creq) or (ctok >= 0 and tok + tonumber(ARGV[b + 4]) > ctok)
     or (ccost >= 0 and cost + tonumber(ARGV[b + 5]) > ccost + 1e-12) then fits = 0 end
  used[i] = {tostring(req), tostring(tok), tostring(cost), tostring(oldest)}
end
if fits == 1 and not again then
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


@dataclass
class _Call:
    """One script call waiting for the next pipeline."""

    script: str
    keys: list[str]
    args: list[Any]
    done: asyncio.Future[Any]


class RedisStore:
    """One Redis server (or any Redis whose keys all live in one slot). The cluster store overrides
    where keys live (`_prefix`, `_groups`), how a script reaches its shard (`_run`) and how a
    reservation's shards are found again (`_tags_of`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: Any = None
        self._shas: dict[str, str] = {}  # script text -> its SHA-1, for EVALSHA
        self._queue: list[_Call] = []
        self._sending: asyncio.Task[None] | None = None

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = aioredis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                            decode_responses=True)
        return self._redis

    def _error(self, exc: BaseException) -> StoreError:
        return StoreError(f"redis {redact(self.url)}: {type(exc).__name__}: {exc}")

    # --- where keys live -------------------------------------------------------------------------

    def _prefix(self, tag: str) -> str:
        return PREFIX

    def _groups(self, charges: Sequence[Charge]) -> list[tuple[str, list[Charge]]]:
        """The charges reserved together in one script, by hash tag: on one server, all of them."""
        return [("", list(charges))]

    async def _tags_of(self, rid: str) -> list[str]:
        return [""]

    async def _remember(self, rid: str, tags: Sequence[str]) -> None:
        """Record which shards a reservation touched (nothing to record on one server)."""

    async def _forget(self, rid: str) -> None:
        """Drop that record once the reservation is released."""

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any], *, writes: bool) -> Any:
        """The script's answer. Every call that arrives while a pipeline is out (or within one
        event-loop turn when none is) goes out in the next one: one round trip and one pass through
        redis-py for the batch, as the SQLite store batches its transactions. Each script still runs
        whole on the server (Redis runs one script at a time), so each reservation stays
        all-or-nothing and exact against what ran before it."""
        loop = asyncio.get_running_loop()
        call = _Call(script, list(keys), list(args), loop.create_future())
        self._queue.append(call)
        if self._sending is None:
            self._sending = loop.create_task(self._send_batches())
        return await call.done

    async def _send_batches(self) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this event-loop turn joins the first batch
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await self._pipeline(batch)
                except Exception as exc:  # the connection failed: each call learns it, as it would alone
                    results = [exc] * len(batch)
                except BaseException:  # cancelled (the worker is stopping): nobody is left waiting
                    for call in batch + self._queue:
                        if not call.done.done():
                            call.done.set_exception(ConnectionError("the budget store is closing"))
                    self._queue = []
                    raise
                for call, result in zip(batch, results, strict=True):
                    if call.done.done():
                        continue
                    if isinstance(result, BaseException):
                        call.done.set_exception(result)
                    else:
                        call.done.set_result(result)
        finally:
            self._sending = None

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        """EVALSHA for each call (the ~2.5 KB script is neither sent nor hashed by the server each
        time); calls the server answered NOSCRIPT (restarted, SCRIPT FLUSH) did not run: the script
        is loaded and they go again."""
        client = self._client()
        results = await self._evalsha(client, batch)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            for script in {batch[i].script for i in missing}:
                await client.script_load(script)
            for i, result in zip(missing, await self._evalsha(client, [batch[i] for i in missing]), strict=True):
                results[i] = result
        return results

    async def _evalsha(self, client: Any, calls: list[_Call]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for call in calls:
            sha = self._shas.get(call.script)
            if sha is None:
                sha = self._shas[call.script] = hashlib.sha1(call.script.encode()).hexdigest()  # noqa: S324 - Redis' script id
            pipe.evalsha(sha, len(call.keys), *call.keys, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    # --- the store interface ---------------------------------------------------------------------

    async def reserve(self, rid: str, charges: Sequence[Charge], now: float, ttl_s: float | None) -> Reservation:
        groups = self._groups(charges)
        try:
            await self._remember(rid, [tag for tag, _ in groups])
            # Group by group (one on a server, one per shard on a cluster): each is all-or-nothing and
            # exact; when a later group refuses, the earlier ones are released, so no cap is ever
            # exceeded (a sibling may briefly see capacity held that is then returned).
            results: list[tuple[Charge, tuple[str, str, str, str]]] = []
            admitted_all, at_now = True, now
            for done, (tag, group) in enumerate(groups):
                server_now, admitted, used = await self._reserve_group(tag, rid, group, ttl_s)
                at_now = float(server_now)
                results += list(zip(group, used, strict=True))
                if int(admitted) != 1:
                    admitted_all = False
                    if done:
                        await self._update_groups(rid, "release", [t for t, _ in groups[:done]])
                    break
        except FAILURES as exc:
            raise self._error(exc) from exc
        headroom, exceeded, retry = [], [], []
        for charge, (req, tok, usd, oldest) in results:
            first = float(oldest)
            fits, room, wait = check(charge, int(float(req)), int(float(tok)), float(usd),
                                     first if first >= 0 else None, at_now)
            headroom.append(room)
            if not fits:
                exceeded.append(charge.limit.name)
                retry.append(wait)
        if admitted_all:
            return Reservation(True, tuple(headroom))
        return Reservation(False, tuple(headroom), tuple(exceeded or ["budget"]), int(max(retry or [1.0]) + 0.999))

    async def _reserve_group(self, tag: str, rid: str, charges: Sequence[Charge], ttl_s: float | None) -> Any:
        prefix = self._prefix(tag)
        keys = [k for c in charges for k in _bucket_keys(prefix, c.period.bucket)] + [prefix + "r:" + rid]
        args: list[Any] = [rid, -1 if ttl_s is None else ttl_s, RID_TTL_S]
        for c in charges:
            cap = c.limit
            args += [c.limit.rolling_s or 0, c.period.since, c.requests, c.tokens, repr(c.cost_usd),
                     -1 if cap.requests is None else cap.requests, -1 if cap.tokens is None else cap.tokens,
                     -1 if cap.cost_usd is None else repr(cap.cost_usd)]
        return await self._run(_RESERVE, keys, args, writes=True)

    async def _update_groups(self, rid: str, mode: str, tags: Sequence[str], tokens: int = 0,
                             cost_usd: float = 0.0) -> None:
        for tag in tags:
            await self._run(_UPDATE, [self._prefix(tag) + "r:" + rid], [rid, mode, tokens, repr(cost_usd)],
                            writes=True)

    async def _update(self, rid: str, mode: str, tokens: int = 0, cost_usd: float = 0.0) -> None:
        try:
            await self._update_groups(rid, mode, await self._tags_of(rid), tokens, cost_usd)
            if mode == "release":
                await self._forget(rid)
        except FAILURES as exc:
            raise self._error(exc) from exc

    async def settle(self, rid: str, tokens: int, cost_usd: float) -> None:
        await self._update(rid, "settle", tokens, cost_usd)

    async def confirm(self, rid: str) -> None:
        await self._update(rid, "confirm")

    async def release(self, rid: str) -> None:
        await self._update(rid, "release")

    async def _bucket_hashes(self) -> AsyncIterator[tuple[str, str]]:
        """(key, bucket) of every bucket's hash, on every shard."""
        async for key in self._client().scan_iter(match=SCAN_MATCH):
            if key.endswith((":t", ":x")) or BUCKET_MARK not in key:
                continue
            yield key, key.split(BUCKET_MARK, 1)[1]

    async def usage(self, now: float, contains: str = "",
                    rolling: Mapping[str, int | None] | None = None) -> list[UsageRow]:
        rows: list[tuple[Any, ...]] = []
        client = self._client()
        try:
            async for key, bucket in self._bucket_hashes():
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
        except FAILURES as exc:
            raise self._error(exc) from exc
        return aggregate(rows, now, rolling)

    async def reset(self, contains: str) -> int:
        client = self._client()
        removed = 0
        try:
            async for key, bucket in self._bucket_hashes():
                if contains not in bucket:
                    continue
                removed += len([f for f in await client.hkeys(key) if not str(f).startswith("@")])
                await client.delete(key, key + ":t", key + ":x")  # one tag: one slot, one command
        except FAILURES as exc:
            raise self._error(exc) from exc
        return removed

    async def close(self) -> None:
        if self._sending is not None:  # let the calls in flight be answered
            await asyncio.wait({self._sending})
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


BUCKET_MARK = "}:budget:b:"
SCAN_MATCH = "{agentgov*}:budget:b:*"


def _bucket_keys(prefix: str, bucket: str) -> list[str]:
    h = prefix + "b:" + bucket
    return [h, h + ":t", h + ":x"]


__all__ = ["Headroom", "RedisStore"]
