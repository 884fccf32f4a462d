"""A serving worker hands the heap it freed back to the OS: `server.memory_trim_s`, glibc's
malloc_trim on a daemon thread, from serving until stopping; off at 0 or without malloc_trim."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from agentgov.cli.serve import worker_config
from agentgov.cli.stack import DemoKeys, free_port
from agentgov.engine.config import ConfigError, load_config
from agentgov.engine.pipeline import Governor
from agentgov.engine.server.app import WorkerConfig, run_worker
from agentgov.engine.server.memory import MemoryTrimmer, libc_malloc_trim
from tests.support import ExplodingBackend, verifier

THREAD = "agentgov-memory-trim"


def _rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def _wait(condition: threading.Event, timeout_s: float = 10) -> None:
    assert condition.wait(timeout_s)


def test_the_setting_is_read_checked_and_reaches_each_worker(tmp_path: Path) -> None:
    config = tmp_path / "agentgov.yaml"
    config.write_text("server: {port: 9191}\n")
    assert load_config(config).memory_trim_s == 5.0  # on by default
    config.write_text("server: {port: 9191, memory_trim_s: 0.5}\n")
    cfg = load_config(config)
    assert worker_config(cfg, 0).memory_trim_s == 0.5
    assert worker_config(cfg, 1).memory_trim_s == 0.5
    for bad, message in (("-1", "server.memory_trim_s"), ("soon", "server.memory_trim_s must be a number")):
        config.write_text(f"server: {{memory_trim_s: {bad}}}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(config)


def test_trims_run_on_their_own_thread_until_stopped() -> None:
    calls: list[int] = []
    twice = threading.Event()

    def trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) >= 2:
            twice.set()
        return 1

    trimmer = MemoryTrimmer(0.01, trim)
    assert trimmer.start()
    assert not trimmer.start()  # one thread per trimmer
    _wait(twice)
    trimmer.stop()
    done = len(calls)
    assert THREAD not in {t.name for t in threading.enumerate()}
    assert set(calls) == {0}
    assert trimmer.trims == done


def test_no_thread_when_off_or_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not MemoryTrimmer(0, lambda pad: 1).start()
    monkeypatch.setattr("agentgov.engine.server.memory.libc_malloc_trim", lambda: None)
    trimmer = MemoryTrimmer(0.01)
    assert not trimmer.start()
    trimmer.stop()  # stopping what never started is fine


def test_a_failing_trim_is_logged_and_ends_only_the_trimming(caplog: pytest.LogCaptureFixture) -> None:
    failed = threading.Event()

    def trim(pad: int) -> int:
        failed.set()
        raise OSError("no")

    trimmer = MemoryTrimmer(0.01, trim)
    with caplog.at_level(logging.ERROR, logger="agentgov.server"):
        trimmer.start()
        _wait(failed)
        assert trimmer._thread is not None
        trimmer._thread.join(5)
        assert not trimmer._thread.is_alive()
    trimmer.stop()
    assert "malloc_trim failed" in caplog.text
    assert trimmer.trims == 0


def test_glibc_gives_freed_heap_back_when_trimmed() -> None:
    """The binding is real: with most of 80 MB of small blocks freed between survivors (so nothing
    is at the heap's top for free() to give back itself), one trim lowers the anonymous resident set."""
    trim = libc_malloc_trim()
    if trim is None:
        pytest.skip("this C library has no malloc_trim")
    blocks = [bytes(2048) for _ in range(40_000)]  # above pymalloc's 512 bytes: glibc's malloc
    survivors = blocks[::64]
    del blocks
    before = _rss_anon_mb()
    trim(0)
    after = _rss_anon_mb()
    assert before - after > 30, (before, after)
    assert len(survivors) == 625


def test_a_serving_worker_trims_and_stops_trimming_when_it_stops(tmp_path: Path) -> None:
    port = free_port()

    async def scenario() -> tuple[bool, bool]:
        ready, stop = asyncio.Event(), asyncio.Event()
        governor = Governor(ExplodingBackend(), verifier(tmp_path, DemoKeys()))
        worker = run_worker(governor, WorkerConfig("127.0.0.1", port, drain_s=0.1, memory_trim_s=0.01), ready, stop)
        task = asyncio.create_task(worker)
        await ready.wait()
        serving = THREAD in {t.name for t in threading.enumerate()}
        stop.set()
        await task
        return serving, THREAD in {t.name for t in threading.enumerate()}

    serving, after = asyncio.run(scenario())
    assert serving
    assert not after
