"""Keep N worker processes alive: restart one that dies (with backoff) on the same port or socket,
end them all on SIGTERM/SIGINT, and make sure none outlives the parent.

Envoy holds one connection per worker endpoint, so a dead worker is a dead endpoint: Envoy's
health checks eject it within a second (envoy-config), and this brings it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("agentgov.supervisor")
_PR_SET_PDEATHSIG = 1
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 30.0  # a worker that ran this long resets its backoff


def die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this process when its parent dies (even by SIGKILL),
    so a worker never keeps serving an old policy on its port after its supervisor is gone."""
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    backoff_s: float = BACKOFF_START_S
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    target: Callable[..., None]  # target(*args, index): runs one worker until it is told to stop
    args: tuple[Any, ...]
    workers: int
    stop_timeout_s: float = 10.0
    _slots: list[_Slot] = field(default_factory=list)
    _stopping: bool = False

    def run(self) -> int:
        ctx = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(self.workers)]
        for slot in self._slots:
            self._start(ctx, slot)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        while not self._stopping:
            self._step(ctx)
        return self._shutdown()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _start(self, ctx: Any, slot: _Slot) -> None:
        process = ctx.Process(target=_run_worker, args=(self.target, self.args, slot.index), daemon=False)
        process.start()
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None

    def _step(self, ctx: Any) -> None:
        live = [s.process.sentinel for s in self._slots if s.process is not None]
        multiprocessing.connection.wait(live, timeout=0.2)
        now = time.monotonic()
        for slot in self._slots:
            if self._stopping:
                return
            process = slot.process
            if process is not None and process.exitcode is not None:
                ran = now - slot.started
                if ran >= STABLE_AFTER_S:
                    slot.backoff_s = BACKOFF_START_S
                log.warning("worker %d (pid %s) exited with %s after %.1f s; restarting in %.1f s", slot.index,
                            process.pid, process.exitcode, ran, slot.backoff_s)
                process.close()
                slot.process, slot.restart_at = None, now + slot.backoff_s
                slot.backoff_s = min(slot.backoff_s * 2, BACKOFF_MAX_S)
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                slot.restarts += 1
                self._start(ctx, slot)

    def _shutdown(self) -> int:
        """SIGTERM every live worker (they drain), wait, then SIGKILL what is left: no process stays."""
        processes = [s.process for s in self._slots if s.process is not None]
        for p in processes:
            if p.exitcode is None and p.pid:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for p in processes:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                log.warning("worker pid %s did not stop in time; killing it", p.pid)
                p.kill()
                p.join(5)
        return 0


def _run_worker(target: Callable[..., None], args: tuple[Any, ...], index: int) -> None:
    die_with_parent()
    if os.getppid() == 1:  # the parent died before prctl took effect
        return
    target(*args, index)
