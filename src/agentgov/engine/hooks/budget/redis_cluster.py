"""Budgets on a Redis Cluster: `budgets.store: redis+cluster://[user:password@]host:port[,host:port…]`
(`rediss+cluster://` for TLS), the addresses being seed nodes from which the client learns the rest.

Each bucket's keys carry the hash tag of the bucket's owner, so that they live in one slot: by default
the tenant (`budgets.hash_tag: tenant`), so a tenant's limits are reserved in one atomic script on one
shard while tenants spread over the cluster. A limit keyed by something wider than a tenant (a model
for every tenant) lives in its own slot and is reserved in a second script: the groups are reserved
in order and a refusal releases the earlier ones, so no cap is ever exceeded.

Redis replicates asynchronously: a reservation the master accepted but had not yet passed on would
be lost by a failover, and the promoted replica would admit it again. So a reservation is admitted
only once `budgets.wait_replicas` replicas have acknowledged it (WAIT on the script's own connection);
a master with no replica connected has nothing a failover could lose and is not waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, TryAgainError

from agentgov.engine.hooks.budget.cluster_url import cluster_options, redact
from agentgov.engine.hooks.budget.limits import Charge
from agentgov.engine.hooks.budget.redis_store import FAILURES, RID_TTL_S, RedisStore
from agentgov.engine.hooks.budget.store import Reservation, StoreError

WAIT_MS = 250  # how long a reservation waits for its replica before the request is refused (503)
NO_REPLICA_RECHECK_S = 1.0  # a master seen without replicas is not waited on for this long


def hash_tag(owner: str) -> str:
    """A bucket owner as a hash tag's content: braces would end the tag early, so they are replaced
    (two owners that then coincide only share a slot; their keys stay distinct)."""
    return owner.replace("{", "(").replace("}", ")")


class RedisClusterStore(RedisStore):
    def __init__(self, url: str, *, wait_replicas: int = 1) -> None:
        super().__init__(url)
        options = cluster_options(url)
        options["startup_nodes"] = [ClusterNode(host, port) for host, port in options["startup_nodes"]]
        self._options = options
        self.wait_replicas = wait_replicas
        self._no_replica_until: dict[str, float] = {}

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = RedisCluster(**self._options, socket_timeout=1.0, socket_connect_timeout=1.0,
                                       decode_responses=True)
        return self._redis

    def _prefix(self, tag: str) -> str:
        return "{agentgov:" + hash_tag(tag) + "}:budget:" if tag else super()._prefix(tag)

    def _groups(self, charges: Sequence[Charge]) -> list[tuple[str, list[Charge]]]:
        groups: dict[str, list[Charge]] = {}
        for charge in charges:
            groups.setdefault(charge.owner, []).append(charge)
        return list(groups.items())

    def _directory(self, rid: str) -> str:
        return "{agentgov:rid=" + hash_tag(rid) + "}:budget:shards"

    async def _remember(self, rid: str, tags: Sequence[str]) -> None:
        """Which shards hold this reservation, for settle and release, which know only its id (they
        may run in another worker or node). Written before the reservation, so none is untraceable."""
        if tags == [""]:
            return  # `hash_tag: single`: every key in one slot, nothing to look up
        pipe = self._client().pipeline(transaction=False)
        pipe.sadd(self._directory(rid), *tags)
        pipe.expire(self._directory(rid), RID_TTL_S)
        await pipe.execute()

    async def _tags_of(self, rid: str) -> list[str]:
        members = await self._client().smembers(self._directory(rid))
        return sorted(str(m) for m in members) or [""]

    async def _forget(self, rid: str) -> None:
        await self._client().delete(self._directory(rid))

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any], *, writes: bool) -> Any:
        """The script and, for a write, WAIT on the same connection (WAIT counts the acknowledgements
        of that connection's writes, so the two go out together in one pipeline to the slot's
        master). A slot that moved refreshes the map and tries again; the script is idempotent."""
        client = self._client()
        for attempt in range(3):
            await client.initialize()  # learns the map on first use, or after a failure dropped it
            node = client.get_node_from_key(keys[0])
            wait = writes and self.wait_replicas > 0 and self._no_replica_until.get(node.name, 0.0) < time.monotonic()
            pipe = client.pipeline(transaction=False)
            pipe.eval(script, len(keys), *keys, *args)
            if wait:
                pipe.execute_command("WAIT", self.wait_replicas, WAIT_MS, target_nodes=node)
            try:
                results = await pipe.execute(allow_redirections=False)
            except MovedError as exc:
                await client.nodes_manager.move_slot(exc)
                continue
            except (AskError, TryAgainError) as exc:
                if attempt == 2:
                    raise StoreError(f"redis {redact(self.url)}: slot is migrating ({exc})") from exc
                await asyncio.sleep(0.05)  # a resharding moves keys one by one: the slot settles soon
                continue
            if wait:
                await self._replicated(node, int(results[1]))
            return results[0]
        raise StoreError(f"redis {redact(self.url)}: the slot of {keys[0]!r} kept moving")

    async def _replicated(self, node: ClusterNode, acknowledged: int) -> None:
        if acknowledged >= self.wait_replicas:
            return
        role = await self._client().execute_command("ROLE", target_nodes=node)
        connected = len(role[2]) if isinstance(role, list | tuple) and len(role) > 2 else 0
        if connected == 0:
            # Nothing a failover could lose: the shard has no replica to promote.
            self._no_replica_until[node.name] = time.monotonic() + NO_REPLICA_RECHECK_S
            return
        if acknowledged >= min(self.wait_replicas, connected):
            return
        raise StoreError(f"redis {redact(self.url)}: {node.name} did not replicate the reservation within "
                         f"{WAIT_MS} ms ({acknowledged} of {min(self.wait_replicas, connected)} replica(s))")

    async def reserve(self, rid: str, charges: Sequence[Charge], now: float, ttl_s: float | None) -> Reservation:
        try:
            return await super().reserve(rid, charges, now, ttl_s)
        except StoreError:
            # Not known to be replicated: the request is refused; what was reserved is returned
            # (if that fails too, a TTL or the window frees it: a cap is never exceeded either way).
            with contextlib.suppress(*FAILURES, StoreError):
                await self._update_groups(rid, "release", await self._tags_of(rid))
            raise


__all__ = ["RedisClusterStore"]
