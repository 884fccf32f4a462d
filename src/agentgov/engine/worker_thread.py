"""One long-lived thread that runs blocking calls (a SQLite batch, an audit write) for the event
loop, in the order they were handed to it.

Hand-written rather than `loop.run_in_executor` on a one-thread `ThreadPoolExecutor`: the executor's
`submit` (locks, a work item, a concurrent future, a semaphore to decide whether to start a thread)
and the future's chaining back into the loop cost the event loop ~43 µs of CPU per round trip,
against ~27 µs here (a `SimpleQueue.put` out, one `call_soon_threadsafe` back; measured under
uvloop, docs/benchmarks.md), on the thread every decision shares. The full pipeline hands over a
budget batch and an audit batch (about 4.5 decisions each at saturation), and with audit
`durability: write` an fsync. Semantics are the executor's: calls run one at a time in order, an
exception reaches the awaiting caller, and a caller that stops waiting does not stop the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


class WorkerThread:
    """Runs `fn(*args)` on its own thread; `run` is called on the event loop and awaited there."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """A future for `fn(*args)`, run after every call handed over before it."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            loop, future, fn, args = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the caller, as an executor would
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self, wait_s: float = 0.0) -> None:
        """Stop once the calls already handed over have run; with `wait_s`, wait that long for it."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._jobs.put(_STOP)
            if wait_s > 0 and thread is not threading.current_thread():
                thread.join(wait_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
