"""Hand the heap a worker has freed back to the operating system while it serves.

After a burst of load a worker's resident memory stays at the burst's high-water mark: CPython frees
objects into the C library's malloc, which keeps the pages (one arena per thread that allocated) for
reuse. Measured on the full pipeline (docs/benchmarks.md), a saturation run left 5 MB (fsync audit)
to 21 MB (audit `durability: write`) of freed memory resident; glibc's `malloc_trim(0)` returned it
in 0.03-0.7 ms. A daemon thread calls it every `server.memory_trim_s` seconds: ctypes releases the
GIL for the call, so decisions keep running (a malloc on another thread waits at most for glibc's
arena lock). Where the C library has no `malloc_trim` (musl, macOS), nothing runs.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("agentgov.server")

Trim = Callable[[int], int]


def libc_malloc_trim() -> Trim | None:
    """glibc's `malloc_trim`, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class MemoryTrimmer:
    """Calls `trim(0)` every `every_s` seconds on a daemon thread, from `start` until `stop`."""

    def __init__(self, every_s: float, trim: Trim | None = None) -> None:
        self.every_s = every_s
        self._trim = trim if trim is not None else libc_malloc_trim()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0

    def start(self) -> bool:
        """Whether a thread now trims (not when switched off, or where there is no malloc_trim)."""
        if self.every_s <= 0 or self._trim is None or self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._run, name="agentgov-memory-trim", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        trim = self._trim
        assert trim is not None
        while not self._stop.wait(self.every_s):
            try:
                trim(0)
            except Exception:  # a foreign call that fails must not end the worker; it is only memory
                log.exception("malloc_trim failed: no longer trimming")
                return
            self.trims += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
