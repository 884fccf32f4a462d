"""Are they within budget? Exact caps under concurrency (two worker processes; SQLite, Redis, and two
nodes sharing Redis), reserve-then-settle from the backend's usage, 429 with Retry-After and
RateLimit headers, a store that fails following on_store_error, and `agentgov budget show|reset`."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.cli.stack import LocalStack, free_port
from agentgov.engine.hooks.budget.limits import BudgetConfigError, Limit, period, settings_from_config
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, request, send
from tests.redis_servers import RedisServer
from tests.support import wait_for


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def budgets(store: str, cap: int, **extra: Any) -> dict[str, Any]:
    return {"budgets": {"store": store, "on_store_error": "deny", "limits": [
        {"name": "calls-per-subject", "key": "subject", "window": "1h", "requests": cap, **extra}]}}


def storm(stacks: list[LocalStack], n: int, token_for: Any, path: str = "/mcp", body: Any = None) -> list[int]:
    """`n` requests at once (50 in flight), spread over the stacks given."""
    def one(i: int) -> int:
        stack = stacks[i % len(stacks)]
        return send(stack, path, body or CALL, bearer(token_for(stack)))[0]

    with ThreadPoolExecutor(50) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.envoy
@pytest.mark.parametrize("store", ["sqlite", "redis"])
@pytest.mark.reliability
def test_200_concurrent_requests_against_a_cap_admit_exactly_the_cap(store: str, redis_server: RedisServer) -> None:
    cap = 37
    url = redis_server.url if store == "redis" else "sqlite"
    stack = LocalStack(policies=POLICIES, workers=2, config_extra=budgets(url, cap))
    if store == "redis":
        subprocess.run(["redis-cli", "-p", str(redis_server.port), "FLUSHALL"], check=True, capture_output=True)
    try:
        stack.start()
        statuses = storm([stack], 200, lambda s: s.keys.token("alice", ["analyst"], "acme"))
    finally:
        stack.stop()
    assert statuses.count(200) == cap
    assert statuses.count(429) == 200 - cap


@pytest.mark.envoy
def test_two_nodes_sharing_redis_keep_one_exact_cap(redis_server: RedisServer) -> None:
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "FLUSHALL"], check=True, capture_output=True)
    cap = 41
    nodes = [LocalStack(policies=POLICIES, workers=2, config_extra=budgets(redis_server.url, cap)) for _ in range(2)]
    nodes[1].keys = nodes[0].keys  # one identity provider for the fleet
    try:
        for node in nodes:
            node.start()
        statuses = storm(nodes, 200, lambda s: s.keys.token("alice", ["analyst"], "acme"))
    finally:
        for node in nodes:
            node.stop()
    assert statuses.count(200) == cap
    assert set(statuses) == {200, 429}


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Token budgets settled by ext_proc from the responses' reported usage (SQLite beside the config)."""
    stack = LocalStack(policies=POLICIES, workers=1, ext_proc=True, config_extra={"budgets": {"limits": [
        {"name": "tokens-per-subject", "key": "subject+model", "window": "1d", "tokens": 100_000},
        {"name": "calls-per-tenant", "key": "tenant", "window": "day", "requests": 1000},
        {"name": "essay-tokens", "key": "tenant", "window": "1h", "tokens": 200, "match": {"tenants": ["essays"]}}]}},
        workdir=tmp_path_factory.mktemp("stack"))
    stack.keep_workdir = True  # pytest's own temporary folder: it keeps and cleans it
    with stack:
        yield stack
        shutil.rmtree(stack.workdir, ignore_errors=True)


def show(stack: LocalStack, *args: str) -> list[dict[str, Any]]:
    proc = subprocess.run([".venv/bin/agentgov" if Path(".venv/bin/agentgov").exists() else "agentgov", "budget",
                           "show", "--config", str(stack.workdir / "agentgov.yaml"), "--format", "json", *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.envoy
def test_a_streamed_completion_is_charged_its_real_usage(metered: LocalStack) -> None:
    token = bearer(metered.keys.token("stella", ["analyst"], "acme"))
    chat = {"model": "gpt-4o-mini", "max_tokens": 500, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hello " * 40}]}
    status, headers, _ = request(metered.url + "/v1/chat/completions", "POST", chat, token)
    assert status == 200
    assert headers["ratelimit-limit"] == "100000"
    row = next(r for r in show(metered, "--subject", "stella") if r["limit"] == "tokens-per-subject")
    # Reserved: 60 prompt tokens (240 characters / 4) + 500 output; settled: what the backend reported.
    assert (row["tokens"], row["reserved"]) == (7, 0)
    assert row["cost_usd"] == pytest.approx((5 * 0.15 + 2 * 0.60) / 1e6, abs=1e-9)


@pytest.mark.envoy
def test_without_usage_the_reservation_is_the_charge(metered: LocalStack) -> None:
    token = bearer(metered.keys.token("ursula", ["analyst"], "acme"))
    chat = {"model": "gpt-4o-mini", "max_tokens": 100, "stream": True,  # no include_usage: unreadable
            "messages": [{"role": "user", "content": "x" * 40}]}
    assert request(metered.url + "/v1/chat/completions", "POST", chat, token)[0] == 200
    row = next(r for r in show(metered, "--subject", "ursula") if r["limit"] == "tokens-per-subject")
    assert (row["tokens"], row["reserved"]) == (10 + 100, 0)  # never zero


@pytest.mark.envoy
def test_a_stream_that_crosses_its_cap_is_cut_cleanly_and_charged_what_was_delivered(metered: LocalStack) -> None:
    token = bearer(metered.keys.token("erin", ["analyst"], "essays"))
    chat = {"model": "gpt-4o-mini", "max_tokens": 20, "stream": True,  # the fake model ignores max_tokens
            "messages": [{"role": "user", "content": "write an essay"}]}
    status, _, raw = request(metered.url + "/v1/chat/completions", "POST", chat, token)
    assert status == 200
    events = [e for e in raw.decode().split("\n\n") if e.strip()]
    assert events[-1].startswith("event: error")
    assert json.loads(events[-1].split("data: ", 1)[1])["error"]["reasons"] == ["budget_exhausted"]
    delivered = sum(len(c["delta"].get("content", "")) for e in events[:-1]
                    for c in json.loads(e.split("data: ", 1)[1])["choices"])
    assert 0 < delivered <= 200 * 4  # never past the cap
    row = next(r for r in show(metered, "--tenant", "essays") if r["limit"] == "essay-tokens")
    assert row["reserved"] == 0
    assert delivered // 4 <= row["tokens"] <= 200 + 10  # charged what was delivered (the crossing chunk withheld)
    again = request(metered.url + "/v1/chat/completions", "POST", chat, token)
    assert again[0] == 429


@pytest.mark.envoy
def test_429_carries_retry_after_and_budget_show_and_reset(tmp_path: Path) -> None:
    stack = LocalStack(policies=POLICIES, config_extra=budgets("sqlite", 2), workdir=tmp_path / "stack")
    stack.keep_workdir = True  # under tmp_path: pytest keeps and cleans it
    try:
        stack.start()
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
        ok = send(stack, "/mcp", CALL, token)
        assert (ok[0], ok[1]["ratelimit-limit"], ok[1]["ratelimit-remaining"]) == (200, "2", "1")
        assert send(stack, "/mcp", CALL, token)[0] == 200
        status, headers, body = send(stack, "/mcp", CALL, token)
        assert (status, body["reasons"]) == (429, ["budget_exhausted"])
        assert 3500 <= int(headers["retry-after"]) <= 3600
        assert headers["ratelimit-remaining"] == "0"
        (row,) = show(stack, "--subject", "alice")
        assert (row["requests"], row["remaining"]["requests"]) == (2, 0)
        reset = subprocess.run([".venv/bin/agentgov", "budget", "reset", "--config", str(stack.workdir / "agentgov.yaml"),
                                "--subject", "alice"], capture_output=True, text=True, check=True)
        assert "2 usage record(s) removed" in reset.stdout
        assert send(stack, "/mcp", CALL, token)[0] == 200
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


@pytest.mark.envoy
@pytest.mark.reliability
def test_redis_stopped_mid_load_never_admits_beyond_the_cap() -> None:
    server = RedisServer()
    server.start()
    cap = 60
    stack = LocalStack(policies=POLICIES, workers=2, config_extra=budgets(server.url, cap))
    results: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        stack.start()
        token = bearer(stack.keys.token("alice", ["analyst"], "acme"))

        def load() -> None:
            while not stop.is_set():
                results.append((time.monotonic(), send(stack, "/mcp", CALL, token)[0]))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(results) >= 20)  # under load with the store up
        server.stop()
        stopped_at = time.monotonic()
        assert wait_for(lambda: sum(1 for at, _ in list(results) if at > stopped_at + 0.3) >= 20)  # and with it down
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        stop.set()
        stack.stop()
        server.stop()
    statuses = [s for _, s in results]
    assert set(statuses) <= {200, 429, 503}
    assert statuses.count(200) <= cap  # never beyond the cap
    late = [s for at, s in results if at > stopped_at + 0.3]
    assert late
    assert set(late) == {503}  # on_store_error: deny: nothing admitted that could not be counted


def test_budget_settings_and_windows() -> None:
    with pytest.raises(BudgetConfigError, match="key must be one of"):
        settings_from_config({"limits": [{"name": "x", "key": "user", "window": "1h", "requests": 1}]})
    with pytest.raises(BudgetConfigError, match="sets no cap"):
        settings_from_config({"limits": [{"name": "x", "key": "subject", "window": "1h"}]})
    with pytest.raises(BudgetConfigError, match="window must be"):
        settings_from_config({"limits": [{"name": "x", "key": "subject", "window": "week", "requests": 1}]})
    with pytest.raises(BudgetConfigError, match="time zone"):
        settings_from_config({"time_zone": "Mars/Olympus"})
    with pytest.raises(BudgetConfigError, match="on_store_error must be deny or allow"):
        settings_from_config({"on_store_error": "maybe"})
    limit = Limit("l", "tenant", "day", requests=1)
    zone = ZoneInfo("Europe/Berlin")
    # 2026-03-29 is a 23-hour day in Berlin: the calendar window follows the local day, not 86400 s.
    start = time.mktime((2026, 3, 29, 12, 0, 0, 0, 0, -1))
    p = period(limit, "tenant=acme", start, zone)
    assert p.bucket.endswith("2026-03-29")
    assert p.reset_at - p.since in (23 * 3600, 24 * 3600)
    month = period(Limit("m", "tenant", "month", requests=1), "k", start, zone)
    assert month.bucket.endswith("2026-03-01")


def test_the_sqlite_store_is_exact_across_processes(tmp_path: Path) -> None:
    """Two processes reserving against one SQLite file at once: exactly the cap is admitted."""
    script = f"""
import asyncio, sys, time
from pathlib import Path
from agentgov.engine.hooks.budget.limits import settings_from_config, charges_for
from agentgov.engine.hooks.budget.store import SqliteStore
from agentgov.engine.model import Subject
from agentgov.engine.protocols.parsed import ParsedAction
s = settings_from_config({{"limits": [{{"name": "n", "key": "tenant", "window": "1h", "requests": 53}}]}})
store = SqliteStore(Path({str(tmp_path / "b.sqlite3")!r}))
subject = Subject("u", (), "acme", {{}}, True)
action = ParsedAction("tool.call", "t", "tool", "t")
async def go():
    got = 0
    for i in range(100):
        r = await store.reserve(sys.argv[1] + str(i), charges_for(s, subject, [action], time.time()), time.time(), 60)
        await store.confirm(sys.argv[1] + str(i))
        got += r.admitted
    print(got)
asyncio.run(go())
"""
    procs = [subprocess.Popen([".venv/bin/python", "-c", script, name], stdout=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    admitted = sum(int(p.communicate(timeout=60)[0]) for p in procs)
    assert admitted == 53


def test_on_store_error_allow_fails_open_and_counts_it(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from agentgov.engine.config import build_governor, load_config

    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False},
                                "budgets": {"store": f"redis://127.0.0.1:{free_port()}/0", "on_store_error": "allow",
                                            "limits": [{"name": "n", "key": "subject", "window": "1h", "requests": 1}]}}))
    gov = build_governor(load_config(path))
    stated = {"subject": {"id": "a", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
              "action": {"kind": "tool.call", "name": "web.search"}, "resource": {"type": "tool", "id": "web.search"}}
    before = REGISTRY.get_sample_value("agentgov_budget_store_errors_total", {"outcome": "allowed"}) or 0

    async def go() -> list[bool]:
        try:
            return [(await gov.decide_stated(stated)).decision.allow for _ in range(3)]
        finally:
            await gov.close()

    assert asyncio.run(go()) == [True, True, True]
    assert REGISTRY.get_sample_value("agentgov_budget_store_errors_total", {"outcome": "allowed"}) == before + 3


def test_policy_data_overrides_a_limit_for_one_tenant(tmp_path: Path, policies_copy: Path) -> None:
    from agentgov.engine.config import ConfigError, build_governor, load_config

    (policies_copy / "agentgov" / "budgets").mkdir()
    (policies_copy / "agentgov" / "budgets" / "data.yaml").write_text("per-subject: {globex: {requests: 3}}\n")
    path = tmp_path / "agentgov.yaml"
    config = {"policy": {"paths": [str(policies_copy)]}, "identity": {"required": False},
              "budgets": {"limits": [{"name": "per-subject", "key": "subject", "window": "1h", "requests": 1}]}}
    path.write_text(json.dumps(config))
    gov = build_governor(load_config(path))

    def stated(user: str, tenant: str) -> dict[str, Any]:
        return {"subject": {"id": user, "roles": ["analyst"], "tenant": tenant, "authenticated": True},
                "action": {"kind": "tool.call", "name": "web.search"}, "resource": {"type": "tool", "id": "web.search"}}

    async def go() -> tuple[list[bool], list[bool]]:
        try:
            acme = [(await gov.decide_stated(stated("a", "acme"))).decision.allow for _ in range(3)]
            globex = [(await gov.decide_stated(stated("g", "globex"))).decision.allow for _ in range(5)]
            return acme, globex
        finally:
            await gov.close()

    assert asyncio.run(go()) == ([True, False, False], [True, True, True, False, False])
    (policies_copy / "agentgov" / "budgets" / "data.yaml").write_text("per-tenant: {globex: {requests: 3}}\n")
    with pytest.raises(ConfigError, match="no limit of that name"):
        build_governor(load_config(path))


# --- the SQLite store's running totals -------------------------------------------------------------

_DAY = Limit("daily", "subject", "day", requests=1_000_000, tokens=10**9, cost_usd=10**6)
_ROLLING = Limit("recent", "subject", "1h", requests=1_000_000, tokens=10**9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release", "expire"]), st.integers(0, 7),
                          st.integers(0, 500)), min_size=1, max_size=40))
def test_calendar_totals_always_equal_the_sum_of_the_charges(tmp_path_factory: pytest.TempPathFactory,
                                                             ops: list[tuple[str, int, int]]) -> None:
    """However charges are reserved, settled, released or expire, the running total a calendar
    window is checked against equals the sum over its charges (what a full scan would give)."""
    from agentgov.engine.hooks.budget.limits import Charge
    from agentgov.engine.hooks.budget.store import SqliteStore

    store = SqliteStore(tmp_path_factory.mktemp("totals") / "b.sqlite3")
    zone, now = ZoneInfo("UTC"), 1_790_000_000.0

    async def run() -> None:
        for op, rid, tokens in ops:
            at = now + (3600 if op == "expire" else 0)
            charges = [Charge(limit, period(limit, "alice", now, zone), 1, tokens, tokens / 1000)
                       for limit in (_DAY, _ROLLING)]
            if op in ("reserve", "expire"):
                await store.reserve(f"r{rid}", charges, at, 60.0 if rid % 2 else None)
            elif op == "settle":
                await store.settle(f"r{rid}", tokens * 2, tokens / 500)
            else:
                await store.release(f"r{rid}")
        db = store._connect()
        for bucket, requests, tokens, cost in db.execute("SELECT bucket, requests, tokens, cost FROM totals"):
            summed = db.execute("SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(tokens), 0), COALESCE(SUM(cost), 0)"
                                " FROM entries WHERE bucket = ?", (bucket,)).fetchone()
            assert (requests, tokens) == summed[:2]
            assert abs(cost - summed[2]) < 1e-6
        await store.close()

    asyncio.run(run())


def test_a_database_from_before_the_totals_is_backfilled_once(tmp_path: Path) -> None:
    import sqlite3

    from agentgov.engine.hooks.budget.limits import Charge
    from agentgov.engine.hooks.budget.store import SqliteStore

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""CREATE TABLE entries (bucket TEXT NOT NULL, rid TEXT NOT NULL, limit_name TEXT NOT NULL,
        key TEXT NOT NULL, at REAL NOT NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL, cost REAL NOT NULL,
        reserved_until REAL, PRIMARY KEY (bucket, rid));""")
    zone, now = ZoneInfo("UTC"), 1_790_000_000.0
    day = period(Limit("daily", "subject", "day", requests=3), "alice", now, zone)
    old.executemany("INSERT INTO entries VALUES (?, ?, 'daily', 'alice', ?, 1, 0, 0, NULL)",
                    [(day.bucket, f"old{i}", now) for i in range(2)])
    old.commit()
    old.close()
    store = SqliteStore(path)
    limit = Limit("daily", "subject", "day", requests=3)

    async def run() -> list[bool]:
        admitted = [(await store.reserve(f"new{i}", [Charge(limit, day, 1, 0, 0.0)], now, None)).admitted
                    for i in range(3)]
        await store.close()
        return admitted

    assert asyncio.run(run()) == [True, False, False]  # two were used before the upgrade: one left
    again = SqliteStore(path)
    assert again._connect().execute("SELECT requests FROM totals").fetchone() == (3,)  # not counted twice


RESERVING_WORKER = """
import asyncio, os, sys, time
from pathlib import Path
from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.hooks.budget.hook import BudgetHook, open_store
from agentgov.engine.hooks.budget.limits import settings_from_config
from agentgov.engine.model import Subject
from agentgov.engine.protocols.parsed import ParsedAction

async def main():
    settings = settings_from_config({"store": sys.argv[1], "reservation_ttl_s": 2,
                                     "limits": [{"name": "calls", "key": "tenant", "window": "1h", "requests": 2}]})
    hook = BudgetHook(settings, open_store(settings, Path(sys.argv[2])), settled_by_responses=True)
    chat = ParsedAction(kind="llm.chat", name="gpt-4o", resource_type="model", resource_id="gpt-4o",
                        arguments={"model": "gpt-4o", "max_tokens": 16}, texts=(("messages[0].content", "hi"),))
    request = HookRequest(decision_id="killed-mid-request", entry_point="ext_authz", method="POST",
                          path="/v1/chat/completions", host="", headers={},
                          subject=Subject(id="alice", roles=("analyst",), tenant="acme", authenticated=True),
                          actions=(chat,))
    await hook.before(request)  # reserved; the answer (and its settlement) never comes
    print("reserved", flush=True)
    os._exit(9)  # the worker is killed mid-request

asyncio.run(main())
"""


@pytest.mark.reliability
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_reservation_whose_worker_was_killed_is_released_by_its_ttl(tmp_path: Path, redis_server: RedisServer,
                                                                       run_cli: Callable[..., Result],
                                                                       backend: str) -> None:
    """A worker killed between reserving and settling leaves a reservation behind: it counts against
    the cap (never admitting more than the cap meanwhile) until its TTL, then it is released and the
    count is right again, with no process left to release it."""
    store = f"sqlite:///{tmp_path / 'b.sqlite3'}" if backend == "sqlite" else redis_server.url
    killed = subprocess.run([sys.executable, "-c", RESERVING_WORKER, store, str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert killed.returncode == 9, killed.stderr
    assert killed.stdout.strip() == "reserved"
    config = tmp_path / "agentgov.yaml"
    config.write_text(yaml.safe_dump({"budgets": {"store": store, "reservation_ttl_s": 2, "limits": [
        {"name": "calls", "key": "tenant", "window": "1h", "requests": 2}]}}))

    def counted() -> tuple[int, int]:
        result = run_cli("budget", "show", "--config", str(config), "--tenant", "acme", "--format", "json")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)
        return sum(r["requests"] for r in rows), sum(r["reserved"] for r in rows)

    assert counted() == (1, 1)  # the dead worker's reservation still holds its place under the cap
    assert wait_for(lambda: counted() == (0, 0), 15)  # released by its TTL


def test_redis_releases_a_reservation_of_zero_tokens(redis_server: RedisServer) -> None:
    """A tool call reserves one request and no tokens; releasing it (the policy denied) must not trip
    on Lua's "-0", which Redis refuses as an integer (found by the cluster tests)."""
    from agentgov.engine.hooks.budget.limits import charges_for
    from agentgov.engine.hooks.budget.redis_store import RedisStore
    from agentgov.engine.model import Subject
    from agentgov.engine.protocols.parsed import ParsedAction

    subprocess.run(["redis-cli", "-p", str(redis_server.port), "FLUSHALL"], check=True, capture_output=True)
    settings = settings_from_config(budgets(redis_server.url, 1)["budgets"])
    subject = Subject("zero", ("analyst",), "acme", authenticated=True)
    action = ParsedAction("tool.call", "crm.query", "tool", "crm.query")

    async def run() -> tuple[bool, bool, int]:
        store = RedisStore(redis_server.url)
        try:
            first = await store.reserve("r1", charges_for(settings, subject, [action], time.time()), time.time(), None)
            await store.release("r1")
            again = await store.reserve("r2", charges_for(settings, subject, [action], time.time()), time.time(), None)
            # A client that retries a reserve whose reply it lost does not count it twice.
            retried = await store.reserve("r2", charges_for(settings, subject, [action], time.time()), time.time(),
                                          None)
            return first.admitted, again.admitted and retried.admitted, \
                sum(r.requests for r in await store.usage(time.time()))
        finally:
            await store.close()

    assert asyncio.run(run()) == (True, True, 1)


def test_a_redis_that_lost_its_scripts_still_reserves_exactly(redis_server: RedisServer) -> None:
    """Reservations run as EVALSHA: after a restart or SCRIPT FLUSH the server no longer knows the
    script (NOSCRIPT), and the calls it refused load it and go again, a whole burst of them too."""
    from agentgov.engine.hooks.budget.limits import Charge
    from agentgov.engine.hooks.budget.redis_store import RedisStore

    subprocess.run(["redis-cli", "-p", str(redis_server.port), "FLUSHALL"], check=True, capture_output=True)
    limit = Limit("scripted", "subject", "day", requests=4)
    zone, now = ZoneInfo("UTC"), time.time()
    store = RedisStore(redis_server.url)
    charge = Charge(limit, period(limit, "alice", now, zone), 1, 0, 0.0)

    async def run() -> tuple[bool, list[bool]]:
        first = (await store.reserve("s0", [charge], now, None)).admitted
        subprocess.run(["redis-cli", "-p", str(redis_server.port), "SCRIPT", "FLUSH"], check=True,
                       capture_output=True)
        burst = await asyncio.gather(*(store.reserve(f"s{i}", [charge], now, None) for i in range(1, 6)))
        await store.close()
        return first, [r.admitted for r in burst]

    first, burst = asyncio.run(run())
    assert first
    assert sorted(burst) == [False, False, True, True, True]  # the cap of 4 holds across the reload


def test_redis_reservations_arriving_together_share_one_round_trip(redis_server: RedisServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Like the SQLite store's batches: the calls of one event-loop turn go out in one pipeline,
    each script still whole and exact on the server."""
    from agentgov.engine.hooks.budget.limits import Charge
    from agentgov.engine.hooks.budget.redis_store import RedisStore

    subprocess.run(["redis-cli", "-p", str(redis_server.port), "FLUSHALL"], check=True, capture_output=True)
    limit = Limit("together", "subject", "day", requests=7)
    zone, now = ZoneInfo("UTC"), time.time()
    store = RedisStore(redis_server.url)
    sizes: list[int] = []
    real = RedisStore._pipeline

    async def counted(self: RedisStore, batch: list[Any]) -> list[Any]:
        sizes.append(len(batch))
        return await real(self, batch)

    monkeypatch.setattr(RedisStore, "_pipeline", counted)
    charge = Charge(limit, period(limit, "alice", now, zone), 1, 0, 0.0)

    async def run() -> list[bool]:
        results = await asyncio.gather(*(store.reserve(f"t{i}", [charge], now, None) for i in range(20)))
        await store.close()
        return [r.admitted for r in results]

    admitted = asyncio.run(run())
    assert sum(admitted) == 7
    assert sizes == [20]


def test_a_redis_that_stops_answering_mid_batch_fails_every_call_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline whose connection fails (here: a server that accepts and never answers, past the
    client's 1 s timeout), or that is cancelled at shutdown, answers every waiting call with a store
    error (a deny by default), never a call left waiting."""
    import socket

    from agentgov.engine.hooks.budget.limits import Charge
    from agentgov.engine.hooks.budget.redis_store import RedisStore
    from agentgov.engine.hooks.budget.store import StoreError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    limit = Limit("silent", "subject", "day", requests=5)
    zone, now = ZoneInfo("UTC"), time.time()
    charge = Charge(limit, period(limit, "alice", now, zone), 1, 0, 0.0)
    try:
        store = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")

        async def timed_out() -> list[BaseException | object]:
            return await asyncio.wait_for(asyncio.gather(
                *(store.reserve(f"u{i}", [charge], now, None) for i in range(3)), return_exceptions=True), 20)

        assert all(isinstance(r, StoreError) for r in asyncio.run(timed_out()))

        async def cancelled() -> list[BaseException | object]:
            calls = asyncio.gather(*(store.reserve(f"v{i}", [charge], now, None) for i in range(3)),
                                   return_exceptions=True)
            await asyncio.sleep(0.2)  # the pipeline is out, waiting for an answer that will not come
            assert store._sending is not None
            store._sending.cancel()
            return await asyncio.wait_for(calls, 10)

        results = asyncio.run(cancelled())
        assert all(isinstance(r, StoreError) and "closing" in str(r) for r in results)
    finally:
        silent.close()


def test_a_reservation_on_a_closed_sqlite_store_is_refused_not_left_waiting(tmp_path: Path) -> None:
    """A write that reaches the store after it closed (a request still in flight at shutdown) gets
    a store error, which the budget hook turns into a deny, instead of waiting forever."""
    from agentgov.engine.hooks.budget.limits import Charge
    from agentgov.engine.hooks.budget.store import SqliteStore, StoreError

    limit = Limit("closed", "subject", "day", requests=5)
    zone, now = ZoneInfo("UTC"), time.time()
    store = SqliteStore(tmp_path / "b.sqlite3")

    async def run() -> None:
        charge = Charge(limit, period(limit, "alice", now, zone), 1, 0, 0.0)
        assert (await store.reserve("before", [charge], now, None)).admitted
        await store.close()
        with pytest.raises(StoreError, match="closed"):
            await asyncio.wait_for(store.reserve("after", [charge], now, None), 10)
        with pytest.raises(StoreError, match="closed"):  # a read (the usage report) too
            await asyncio.wait_for(store.usage(now), 10)

    asyncio.run(run())
