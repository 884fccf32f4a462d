"""The worker pool heals: kill -9 of a worker under load through the real Envoy, and the parent and
its workers always end together."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgov.cli.stack import LocalStack
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, send

pytestmark = pytest.mark.envoy


def workers_of(parent: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing's spawned children)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    out = []
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            out.append(int(pid))
    return sorted(out)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_for(condition: object, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


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
    time.sleep(1.0)
    killed_at = time.monotonic()
    os.kill(before[0], signal.SIGKILL)
    assert wait_for(lambda: len(workers_of(parent)) == 2 and before[0] not in workers_of(parent))
    time.sleep(5.0)  # the restarted worker is back in Envoy's rotation within a few seconds
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
        time.sleep(3.0)
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
