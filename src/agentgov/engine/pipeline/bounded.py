"""A hook call held to its declared `timeout_s`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def bounded(call: Awaitable[T], timeout_s: float | None) -> T:
    """`call`'s result, or TimeoutError after `timeout_s` (None or 0: no timer, the hook declared its
    work bounded). `asyncio.timeout` runs the call in the caller's task; `wait_for` (Python 3.11)
    wraps it in a task of its own, which measured twice the cost per call (12 µs against 6)."""
    if not timeout_s:
        return await call
    async with asyncio.timeout(timeout_s):
        return await call
