"""The thread the budget store's SQLite batches and the audit log's writes run on: calls run one
at a time in the order handed over, results and exceptions reach the awaiting caller, a caller that
stops waiting does not stop the call, and closing lets what was handed over finish."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentgov.engine.worker_thread import WorkerThread


def test_calls_run_in_order_on_one_named_thread_and_answer_their_callers() -> None:
    lane = WorkerThread("agentgov-test-lane")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(lane.run(job, i) for i in range(50))))

    assert asyncio.run(scenario()) == [i * i for i in range(50)]
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"agentgov-test-lane"}
    lane.close(wait_s=5)
    assert not lane.alive


def test_an_exception_reaches_its_caller_and_the_thread_goes_on() -> None:
    lane = WorkerThread("agentgov-test-lane")

    def fails() -> None:
        raise ValueError("disk full")

    async def scenario() -> str:
        with pytest.raises(ValueError, match="disk full"):
            await lane.run(fails)
        return await lane.run(str.upper, "still serving")

    assert asyncio.run(scenario()) == "STILL SERVING"
    lane.close(wait_s=5)


def test_a_caller_that_stops_waiting_does_not_stop_the_call() -> None:
    lane = WorkerThread("agentgov-test-lane")
    release, finished = threading.Event(), threading.Event()

    def slow() -> str:
        release.wait(10)
        finished.set()
        return "done"

    errors: list[object] = []

    async def scenario() -> str:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        waiting = asyncio.ensure_future(lane.run(slow))
        await asyncio.sleep(0)
        waiting.cancel()
        release.set()
        return await lane.run(lambda: "next")  # runs after the cancelled one, which still ran

    assert asyncio.run(scenario()) == "next"
    assert finished.is_set()
    assert errors == []  # the cancelled caller's answer was dropped, not set on a cancelled future
    lane.close(wait_s=5)


def test_closing_lets_handed_over_calls_finish_and_refuses_new_ones() -> None:
    lane = WorkerThread("agentgov-test-lane")
    gate = threading.Event()
    ran: list[int] = []

    async def scenario() -> None:
        first = lane.run(gate.wait, 10)
        second = lane.run(ran.append, 2)
        lane.close()
        with pytest.raises(RuntimeError, match="closed"):
            lane.run(ran.append, 3)
        gate.set()
        await first
        await second

    asyncio.run(scenario())
    assert ran == [2]
    lane.close(wait_s=5)
    assert not lane.alive


def test_a_result_for_a_loop_that_has_closed_is_dropped_and_the_thread_serves_on() -> None:
    lane = WorkerThread("agentgov-test-lane")
    gate = threading.Event()

    async def abandoned() -> None:
        lane.run(gate.wait, 10)  # nobody awaits it: the loop closes first

    async def later() -> str:
        return await asyncio.wait_for(lane.run(str.upper, "served"), 10)

    asyncio.run(abandoned())
    gate.set()
    assert asyncio.run(later()) == "SERVED"  # on a new loop, after the closed loop's answer was dropped
    lane.close(wait_s=5)
    assert not lane.alive
