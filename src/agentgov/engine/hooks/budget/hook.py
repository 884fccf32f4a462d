"""The `budget` hook: before the policy, reserve what a request will cost against every limit it
touches (all or nothing, exact under concurrency) and tell the policy what is left; after a deny,
release it; when the backend's answer reports its usage (ext_proc), settle the reservation to it."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from agentgov.engine.errors import Failure
from agentgov.engine.hooks.base import BodyVerdict, Deny, Enrichment, HookRequest, ResponseContext
from agentgov.engine.hooks.budget.limits import (
    CHARS_PER_TOKEN,
    BudgetSettings,
    Charge,
    charges_for,
    cost,
    estimate_tokens,
    tenant_caps_from_data,
)
from agentgov.engine.hooks.budget.store import BudgetStore, Reservation, SqliteStore, StoreError
from agentgov.engine.model import Decision

log = logging.getLogger("agentgov.budget")
EXCEEDED = Counter("agentgov_budget_exceeded_total", "Requests refused because a limit was reached", ["limit"])
SPEND = Counter("agentgov_budget_spend_usd_total", "Settled LLM spend (USD)", ["tenant", "model"])
TOKENS = Counter("agentgov_budget_tokens_total", "Settled LLM tokens", ["tenant", "model"])
STORE_ERRORS = Counter("agentgov_budget_store_errors_total", "Budget store failures, by what followed", ["outcome"])


def open_store(settings: BudgetSettings, base: Path) -> BudgetStore:
    if settings.store.startswith(("redis+cluster://", "rediss+cluster://")):
        from agentgov.engine.hooks.budget.redis_cluster import RedisClusterStore

        return RedisClusterStore(settings.store, wait_replicas=settings.wait_replicas)
    if settings.store.startswith(("redis://", "rediss://")):
        from agentgov.engine.hooks.budget.redis_store import RedisStore

        return RedisStore(settings.store)
    path = Path(settings.store.removeprefix("sqlite:///")) if settings.store.startswith("sqlite:///") \
        else base / "budgets.sqlite3"
    return SqliteStore(path if path.is_absolute() else base / path, synchronous=settings.sqlite_synchronous)


class BudgetHook:
    name = "budget"
    phases = frozenset({"before", "after", "response"})
    failure_mode = "deny"
    timeout_s: float | None = 2.0  # a store that does not answer in time is a store error

    def __init__(self, settings: BudgetSettings, store: BudgetStore, *, settled_by_responses: bool) -> None:
        self.settings = settings
        self.store = store
        self._cut: set[str] = set()  # decisions whose stream this hook ended (already settled)
        # Without ext_proc no usage ever comes back: LLM reservations are charged as estimated.
        self.settled_by_responses = settled_by_responses

    async def close(self) -> None:
        await self.store.close()

    def check_policy_data(self, data: Mapping[str, Any]) -> Callable[[], None]:
        """A policy set is about to be activated: read its per-tenant caps (raising BudgetConfigError,
        which refuses the set, when they are malformed); the returned function applies them."""
        caps = tenant_caps_from_data(data, self.settings.limits)

        def commit() -> None:
            self.settings = replace(self.settings, tenant_caps=caps)

        return commit

    async def before(self, request: HookRequest) -> Enrichment | Deny | None:
        now = time.time()
        charges = charges_for(self.settings, request.subject, request.actions, now)
        if not charges:
            return None
        # An LLM call is settled later from its usage (ext_proc); anything else is final at once
        # (released if the policy denies), which saves a second trip to the store.
        settles = self.settled_by_responses and any(a.kind == "llm.chat" for a in request.actions)
        try:
            reservation = await self.store.reserve(request.decision_id, charges, now,
                                                   self.settings.reservation_ttl_s if settles else None)
        except StoreError as exc:
            if self.settings.on_store_error == "allow":
                STORE_ERRORS.labels(outcome="allowed").inc()
                log.warning("budget store unavailable (%s); allowed unmetered (on_store_error: allow)", exc)
                return None
            STORE_ERRORS.labels(outcome="denied").inc()
            log.warning("budget store unavailable (%s); denied (on_store_error: deny)", exc)
            return Deny.failed(Failure.UNAVAILABLE, "budget_store_unavailable", error=str(exc))
        for name in reservation.exceeded:
            EXCEEDED.labels(limit=name).inc()
        figures = self._figures(reservation, charges)
        llm = next((a for a in request.actions if a.kind == "llm.chat"), None)
        if llm is not None:
            figures["reserved_output_tokens"] = estimate_tokens(llm, self.settings.default_output_tokens)[1]
        return Enrichment(budget=[figures] * len(request.actions), response_headers=_rate_headers(reservation),
                          enforce=self._guarantee(reservation, figures))

    def _guarantee(self, reservation: Reservation, figures: Mapping[str, object]) -> Deny | None:
        """With `budgets.enforce: hook`, a request the caps cannot admit is a 429 whatever the policy says
        (the reason the shipped library gives for the same figures)."""
        if reservation.admitted or self.settings.enforce != "hook":
            return None
        remaining, estimated = figures.get("remaining_tokens"), figures.get("estimated_tokens")
        insufficient = isinstance(remaining, int) and isinstance(estimated, int) and 0 < remaining < estimated
        reason = "budget_insufficient" if insufficient else "budget_exhausted"
        return Deny.failed(Failure.OVER_BUDGET, reason, retry_after_s=reservation.retry_after_s,
                           detail="over budget: " + ("the request needs more tokens than are left" if insufficient
                                                     else "the limit is used up until its window resets"))

    @staticmethod
    def _figures(reservation: Reservation, charges: Sequence[Charge]) -> dict[str, object]:
        """The policy input's `budget`: the tightest of every limit that applied. `remaining_*` is what
        was left *before* this request (the store's headroom is after it, when it was admitted), so
        that `estimated_tokens > remaining_tokens` means the request does not fit, as the input
        contract says; the RateLimit-Remaining header keeps the after-this-request figure."""
        taken = {c.limit.name: c for c in charges} if reservation.admitted else {}
        figures: dict[str, object] = {"exhausted": not reservation.admitted, "estimated_tokens": charges[0].tokens,
                                      "estimated_cost_usd": round(charges[0].cost_usd, 8)}
        requests, tokens, spend = [], [], []
        for h in reservation.headroom:
            charge = taken.get(h.limit)
            if h.requests is not None:
                requests.append(h.requests + (charge.requests if charge else 0))
            if h.tokens is not None:
                tokens.append(h.tokens + (charge.tokens if charge else 0))
            if h.cost_usd is not None:
                spend.append(h.cost_usd + (charge.cost_usd if charge else 0.0))
        if requests:
            figures["remaining_requests"] = min(requests)
        if tokens:
            figures["remaining_tokens"] = min(tokens)
        if spend:
            figures["remaining_cost_usd"] = round(min(spend), 8)
        if reservation.retry_after_s is not None:
            figures["retry_after_s"] = reservation.retry_after_s
        return figures

    async def after(self, request: HookRequest, decision: Decision) -> None:
        if not request.extensions.get("_budget"):
            return  # nothing was reserved for this request
        if not decision.allow:
            await self.store.release(request.decision_id)

    async def settle(self, decision_id: str, tenant: str, model: str, input_tokens: int | None,
                     output_tokens: int | None) -> None:
        """The backend reported usage: charge that instead of the estimate. Unknown usage (None)
        keeps the reservation as the charge, never zero. A stream this hook cut was charged what
        it delivered already (the backend's figure counts what it generated past the cut)."""
        if decision_id in self._cut:
            self._cut.discard(decision_id)
            return
        if input_tokens is None or output_tokens is None:
            await self.store.confirm(decision_id)
            return
        usd = cost(self.settings.prices, model, input_tokens, output_tokens)
        await self.store.settle(decision_id, input_tokens + output_tokens, usd)
        TOKENS.labels(tenant=tenant or "-", model=model or "-").inc(input_tokens + output_tokens)
        SPEND.labels(tenant=tenant or "-", model=model or "-").inc(usd)


    def response(self, context: ResponseContext) -> StreamCap | None:
        """Hold a streamed LLM answer to its budget: what the limit had left before the request, less
        its prompt (the output reserved plus whatever else was left)."""
        action = next((a for a in context.actions if a.kind == "llm.chat"), None)
        budget = context.budget
        left, estimated, reserved = (budget.get(k) for k in ("remaining_tokens", "estimated_tokens",
                                                              "reserved_output_tokens"))
        if action is None or not all(isinstance(v, int | float) for v in (left, estimated, reserved)):
            return None
        prompt = int(estimated) - int(reserved)  # type: ignore[arg-type]
        return StreamCap(self, context, int(left) - prompt)  # type: ignore[arg-type]


class StreamCap:
    """Counts the output a stream delivers (characters / 4, the estimate used to reserve) and ends the
    stream with an error event when it would cross the budget; the delivered part is what is charged."""

    def __init__(self, hook: BudgetHook, context: ResponseContext, allowance_tokens: int) -> None:
        self._hook = hook
        self._context = context
        self._allowance = allowance_tokens
        self._buffer = b""
        self._chars = 0
        self._cut = False

    def on_headers(self, status: int, headers: Mapping[str, str]) -> bool:
        return 200 <= status < 300 and "text/event-stream" in headers.get("content-type", "").lower()

    @property
    def wants_buffering(self) -> bool:
        return False

    async def on_body(self, chunk: bytes, end_of_stream: bool) -> BodyVerdict:
        if self._cut:
            return BodyVerdict(replace=b"")
        # Events that began in an earlier chunk were passed already; count whole events as they complete.
        pending = self._buffer
        self._buffer += chunk
        *events, self._buffer = self._buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        allowed: list[bytes] = []
        for event in events:
            chars = self._chars + _delta_chars(event)
            if math.ceil(chars / CHARS_PER_TOKEN) > self._allowance:
                return await self._cut_here(pending, allowed)
            self._chars = chars
            allowed.append(event)
        return BodyVerdict()

    async def _cut_here(self, pending: bytes, allowed: list[bytes]) -> BodyVerdict:
        """End the stream after the last event that fits: what was delivered is what is charged."""
        self._cut = True
        delivered = math.ceil(self._chars / CHARS_PER_TOKEN)
        model = next((a.name for a in self._context.actions if a.kind == "llm.chat"), "")
        await self._hook.store.settle(self._context.decision_id, delivered,
                                      cost(self._hook.settings.prices, model, 0, delivered))
        self._hook._cut.add(self._context.decision_id)
        EXCEEDED.labels(limit="stream").inc()
        payload = json.dumps({"type": "error", "error": {"type": "agentgov_budget_exhausted",
                                                         "reasons": ["budget_exhausted"],
                                                         "decision_id": self._context.decision_id}})
        # The part of the first allowed event sent with an earlier chunk is not repeated.
        # A partly sent event is closed first, so the error event stands on its own.
        kept = b"".join(e + b"\n\n" for e in allowed)[len(pending):] if allowed else (b"\n\n" if pending else b"")
        return BodyVerdict(replace=kept + f"event: error\ndata: {payload}\n\n".encode(), block=True,
                           reason="budget_exhausted")


def _delta_chars(event: bytes) -> int:
    """Characters of streamed text in one SSE event (OpenAI Chat, OpenAI Responses, Anthropic)."""
    data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
    try:
        doc = json.loads(data) if data and data != b"[DONE]" else None
    except ValueError:
        return 0
    if not isinstance(doc, dict):
        return 0
    total = 0
    for choice in doc.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            total += len(delta["content"])
    delta = doc.get("delta")
    if isinstance(delta, str):
        total += len(delta)
    elif isinstance(delta, dict) and isinstance(delta.get("text"), str):
        total += len(delta["text"])
    return total


def _rate_headers(reservation: Reservation) -> dict[str, str]:
    """RateLimit-Limit / -Remaining / -Reset (the IETF draft's three-header form) for the limit
    closest to running out, by the share of its cap that is left."""
    best: tuple[float, int, int, float] | None = None
    for h in reservation.headroom:
        for remaining, cap in ((h.requests, h.cap_requests), (h.tokens, h.cap_tokens)):
            if remaining is None or not cap:
                continue
            share = remaining / cap
            if best is None or share < best[0]:
                best = (share, cap, remaining, h.reset_s)
    if best is None:
        return {}
    _, cap, remaining, reset = best
    return {"ratelimit-limit": str(cap), "ratelimit-remaining": str(remaining), "ratelimit-reset": str(int(reset + 0.999))}
