"""Pause Python's cyclic garbage collector while a large policy or data document is built.

Loading a 20,000-tool catalog makes hundreds of thousands of objects that all stay alive until the
load ends, and the collector kept re-scanning them: composing the YAML took 1.6 s with it and
0.45 s without (docs/benchmarks.md). Nothing these loads make is cyclic garbage that must go
early; reference counting still frees everything as usual.

Only while nothing is being served (start-up, the CLI): the objects made during a pause are all
scanned by the first collection after it, at once, and in a serving worker that collection lands
on decisions (measured on a Cedar reload of that catalog: 37 + 54 ms). A worker calls
`serving_started()` once it serves, and pauses are no-ops from then on: a reload's build runs with
the collector as it is, its work spread over small collections.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = False
_serving = False


def serving_started() -> None:
    """From now on this process serves decisions: gc_paused() leaves the collector alone."""
    global _serving
    _serving = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off for the block, then as it was. Pauses on several threads at once nest, and
    the last one out restores what the process had (a process that keeps it off keeps it off)."""
    global _pauses, _was_enabled
    if _serving:
        yield
        return
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
