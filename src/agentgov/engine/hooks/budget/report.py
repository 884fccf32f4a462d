"""What each budget limit has used in its current window and what is left: one reading shared by
`agentgov budget show` and the console, so the two never disagree."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from agentgov.engine.hooks.budget.limits import BudgetSettings, period
from agentgov.engine.hooks.budget.store import BudgetStore


async def usage_report(settings: BudgetSettings, store: BudgetStore, contains: str = "",
                       now: float | None = None) -> list[dict[str, Any]]:
    """One line per limit and key: usage, caps, remaining, the fraction of the tightest cap used
    (`used`, 0..1) and when the window resets (a calendar window: its next period; a rolling one
    never resets at once, and says so)."""
    now = time.time() if now is None else now
    limits = {limit.name: limit for limit in settings.limits}
    rows = await store.usage(now, contains, {n: limit.rolling_s for n, limit in limits.items()})
    out: list[dict[str, Any]] = []
    for row in rows:
        limit = limits.get(row.limit)
        if limit is None:
            continue
        caps = {"requests": limit.requests, "tokens": limit.tokens, "cost_usd": limit.cost_usd}
        used = {"requests": row.requests, "tokens": row.tokens, "cost_usd": round(row.cost_usd, 9)}
        remaining = {k: None if cap is None else (round(max(0.0, cap - used[k]), 9) if k == "cost_usd"
                                                   else max(0, int(cap - used[k])))
                     for k, cap in caps.items()}
        fractions = [used[k] / cap for k, cap in caps.items() if cap]
        resets = "rolling" if limit.rolling_s is not None else \
            datetime.fromtimestamp(period(limit, row.key, now, settings.time_zone).reset_at, UTC).isoformat(
                timespec="seconds")
        out.append({"limit": row.limit, "key": row.key, "window": limit.window, "requests": row.requests,
                    "tokens": row.tokens, "cost_usd": used["cost_usd"], "reserved": row.reserved,
                    "caps": caps, "remaining": remaining, "used": round(min(1.0, max(fractions, default=0.0)), 4),
                    "resets": resets})
    return out
