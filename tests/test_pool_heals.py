"""The worker pool heals: kill -9 of a worker under load through the real Envoy, and the parent and
its workers always end together."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from agentgov.cli.stack import LocalStack
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, send
from tests.support import alive, wait_for, workers_of

pytestmark = pytest.mark.envoy


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    s = LocalStack(policies=POLICIES, workers=2)
    with s:
        yield s


@pytest.mark.reliability
def test_kill_9_of_a_worker_under_load(stack: LocalStack) -> None:
    parent = stack.procs["agentgov"].pid
    assert wait_for(lambda: len(workers_of(parent)) == 2)
    before = workers_of(parent)
    allowed = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    forbidden = bearer(stack.keys.token("dev1", ["developer"], "acme"))
    results: list[tuple[float, str, int]] = []
    stop = threading.Event()

    def load(kind: str, headers: dict[str, str]) -> None:
        while not stop.is_set():
            status = send(stack, "/mcp", CALL, headers)[0]
            results.append((time.monotonic(), kind, status))

    threads = [threading.Thread(target=load, args=(k, h)) for k, h in
               (("allowed", allowed), ("allowed", allowed), ("forbidden", forbidden))]
    for t in threads:
        t.start()
    assert wait_for(lambda: len(results) >= 30)  # under load before the kill
    killed_at = time.monotonic()
    os.kill(before[0], signal.SIGKILL)
    assert wait_for(lambda: len(workers_of(parent)) == 2 and before[0] not in workers_of(parent))
    # The restarted worker is back in Envoy's rotation within a few seconds: load until 40 allowed calls
    # were answered after that (the assertions below then say they all passed).
    assert wait_for(lambda: sum(1 for at, k, _ in list(results) if k == "allowed" and at > killed_at + 3.0) >= 40, 30)
    stop.set()
    for t in threads:
        t.join(15)
    # Fail closed throughout: a forbidden call is never let through, an allowed one is 200 or 503.
    assert all(s in (403, 503) for _, k, s in results if k == "forbidden")
    assert all(s in (200, 503) for _, k, s in results if k == "allowed")
    late = [s for at, k, s in results if k == "allowed" and at > killed_at + 3.0]
    assert late
    assert all(s == 200 for s in late), late[-20:]
    assert sum(1 for at, k, _ in results if k == "allowed" and at > killed_at) > 20
    assert wait_for(lambda: "restarting" in stack.log("agentgov"))


@pytest.mark.reliability
def test_envoy_ejects_a_dead_worker_even_before_it_is_back(stack: LocalStack) -> None:
    """The supervisor is paused (SIGSTOP) so the dead worker stays dead: Envoy's health checks and
    outlier detection must take it out of rotation, and the other worker serves everything."""
    parent = stack.procs["agentgov"].pid
    assert wait_for(lambda: len(workers_of(parent)) == 2)
    victim = workers_of(parent)[0]
    allowed = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    os.kill(parent, signal.SIGSTOP)
    try:
        os.kill(victim, signal.SIGKILL)
        # Envoy's active health checks take the dead endpoint out: wait until ten calls in a row pass.
        assert wait_for(lambda: all(send(stack, "/mcp", CALL, allowed)[0] == 200 for _ in range(10)), 20)
        statuses = [send(stack, "/mcp", CALL, allowed)[0] for _ in range(40)]
        assert statuses == [200] * 40
    finally:
        os.kill(parent, signal.SIGCONT)
    assert wait_for(lambda: len(workers_of(parent)) == 2 and victim not in workers_of(parent))


@pytest.mark.reliability
def test_sigterm_after_a_crash_leaves_no_process(stack: LocalStack) -> None:
    parent = stack.procs["agentgov"].pid
    assert wait_for(lambda: len(workers_of(parent)) == 2)
    first = workers_of(parent)
    os.kill(first[1], signal.SIGKILL)
    assert wait_for(lambda: len(workers_of(parent)) == 2 and first[1] not in workers_of(parent))
    everyone = workers_of(parent)
    stack.procs["agentgov"].send_signal(signal.SIGTERM)
    stack.procs["agentgov"].wait(timeout=20)
    assert wait_for(lambda: not any(alive(pid) for pid in everyone), 10)


@pytest.mark.reliability
def test_workers_never_outlive_their_parent(stack: LocalStack) -> None:
    parent = stack.procs["agentgov"].pid
    assert wait_for(lambda: len(workers_of(parent)) == 2)
    orphans = workers_of(parent)
    stack.procs["agentgov"].kill()  # SIGKILL: the supervisor cannot forward anything
    stack.procs["agentgov"].wait(timeout=10)
    assert wait_for(lambda: not any(alive(pid) for pid in orphans), 10)
