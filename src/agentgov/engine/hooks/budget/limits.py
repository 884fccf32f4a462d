"""The `budgets:` section of agentgov.yaml (a contract: docs/budgets.md) and the arithmetic of
windows, keys and estimates. Pure: no store, no clock of its own."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentgov.engine.hooks.budget.cluster_url import SCHEMES as CLUSTER_SCHEMES
from agentgov.engine.hooks.budget.cluster_url import ClusterUrlError, cluster_options
from agentgov.engine.keys import unknown_keys
from agentgov.engine.model import Subject
from agentgov.engine.protocols.parsed import ParsedAction

KEYS = ("subject", "tenant", "api_key", "model", "tool", "subject+model", "tenant+model")
_MATCH = {"roles", "tenants", "kinds", "models", "tools"}
_LIMIT_KEYS = {"name", "key", "match", "window", "requests", "tokens", "cost_usd"}
_TOP = {"store", "on_store_error", "prices", "limits", "time_zone", "default_output_tokens", "reservation_ttl_s",
        "enforce", "hash_tag", "wait_replicas", "sqlite_synchronous"}
# On a Redis Cluster, the keys of a bucket carry the hash tag of its owner: the first of its key's parts
# in this order. A tenant's limits then share a slot (reserved atomically together); a limit keyed by
# something wider (a model for every tenant) has a slot of its own.
OWNERS = {"tenant": ("tenant", "subject", "api_key", "model", "tool"),
          "subject": ("subject", "api_key", "tenant", "model", "tool")}
STORES = ("sqlite", "sqlite:///", "redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
_ROLLING = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# USD per 1M tokens (input, output): shipped defaults, overridable under budgets.prices.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60), "gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60),
    "o3": (2.00, 8.00), "o4-mini": (1.10, 4.40), "claude-sonnet-4": (3.00, 15.00), "claude-opus-4": (15.00, 75.00),
    "claude-haiku-3.5": (0.80, 4.00),
}
CHARS_PER_TOKEN = 4  # a conservative estimate without a tokenizer (none is downloaded at run time)


class BudgetConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Limit:
    name: str
    key: str
    window: str  # "30s" … "7d" (rolling) or "day" / "month" (calendar)
    requests: int | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def rolling_s(self) -> int | None:
        m = _ROLLING.match(self.window)
        return int(m.group(1)) * _UNIT[m.group(2)] if m else None


@dataclass(frozen=True)
class BudgetSettings:
    store: str
    on_store_error: str
    limits: tuple[Limit, ...]
    prices: Mapping[str, tuple[float, float]]
    time_zone: ZoneInfo
    default_output_tokens: int = 1024
    reservation_ttl_s: float = 600.0
    # Per-tenant caps from policy data (data.agentgov.budgets.<limit>.<tenant>): limit → tenant → caps.
    tenant_caps: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    # "hook": an exhausted budget is a 429 whatever the policy says (a guarantee); "policy": the policy
    # decides from input.budget (the shipped library answers 429 too).
    enforce: str = "hook"
    # Redis Cluster only: how buckets are spread over slots (tenant | subject | single) and how many
    # replicas must hold a reservation before it admits anything.
    hash_tag: str = "tenant"
    wait_replicas: int = 1
    # SQLite only: `normal` (a power loss may forget the last commits: only capacity comes back) or
    # `full` (every batch's commit is fsynced before its decisions are answered).
    sqlite_synchronous: str = "normal"


def tenant_caps_from_data(data: Mapping[str, Any], limits: Sequence[Limit]) -> dict[str, dict[str, dict[str, Any]]]:
    """Policy data may raise or lower a limit for one tenant: `agentgov.budgets.<limit>.<tenant>:
    {requests?, tokens?, cost_usd?}`. Checked like the configuration: a typo is an error."""
    doc = ((data.get("agentgov") or {}).get("budgets") or {}) if isinstance(data.get("agentgov"), dict) else {}
    if not isinstance(doc, dict):
        raise BudgetConfigError("data.agentgov.budgets must map limit names to tenants")
    names = {limit.name for limit in limits}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, tenants in doc.items():
        if name not in names:
            raise BudgetConfigError(f"data.agentgov.budgets.{name}: no limit of that name in budgets.limits")
        if not isinstance(tenants, dict):
            raise BudgetConfigError(f"data.agentgov.budgets.{name} must map tenants to caps")
        for tenant, caps in tenants.items():
            if not isinstance(caps, dict) or not caps or set(caps) - {"requests", "tokens", "cost_usd"} or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in caps.values()):
                raise BudgetConfigError(f"data.agentgov.budgets.{name}.{tenant} must set requests, tokens or "
                                        "cost_usd to non-negative numbers")
            out.setdefault(str(name), {})[str(tenant)] = dict(caps)
    return out


def settings_from_config(doc: Mapping[str, Any]) -> BudgetSettings:
    problem = unknown_keys(doc, _TOP, "budgets.")
    if problem:
        raise BudgetConfigError(problem)
    store = str(doc.get("store", "sqlite"))
    if not (store == "sqlite" or store.startswith(STORES[1:])):
        raise BudgetConfigError("budgets.store must be sqlite, sqlite:///PATH, redis://host:port/db or "
                                "redis+cluster://host:port[,host:port…]")
    if store.startswith(CLUSTER_SCHEMES):
        try:
            cluster_options(store)
        except ClusterUrlError as exc:
            raise BudgetConfigError(f"budgets.store: {exc}") from None
    mode = doc.get("on_store_error", "deny")
    if mode not in ("deny", "allow"):
        raise BudgetConfigError("budgets.on_store_error must be deny or allow")
    try:
        zone = ZoneInfo(str(doc.get("time_zone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise BudgetConfigError(f"budgets.time_zone {doc.get('time_zone')!r} is not a known time zone") from None
    prices = dict(DEFAULT_PRICES)
    for model, price in (doc.get("prices") or {}).items():
        if not isinstance(price, dict) or set(price) - {"input", "output"} or not all(
                isinstance(price.get(k), int | float) and not isinstance(price.get(k), bool) and price[k] >= 0
                for k in ("input", "output")):
            raise BudgetConfigError(f"budgets.prices.{model} must be {{input: USD per 1M, output: USD per 1M}}")
        prices[str(model)] = (float(price["input"]), float(price["output"]))
    raw_limits = doc.get("limits") or []
    if not isinstance(raw_limits, list):
        raise BudgetConfigError("budgets.limits must be a list")
    limits = tuple(_limit(i, item) for i, item in enumerate(raw_limits))
    names = [limit.name for limit in limits]
    if len(set(names)) != len(names):
        raise BudgetConfigError("budgets.limits: names must be unique")
    out_tokens = doc.get("default_output_tokens", 1024)
    ttl = doc.get("reservation_ttl_s", 600)
    if isinstance(out_tokens, bool) or not isinstance(out_tokens, int) or out_tokens <= 0:
        raise BudgetConfigError("budgets.default_output_tokens must be a positive integer")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise BudgetConfigError("budgets.reservation_ttl_s must be a positive number")
    enforce = doc.get("enforce", "hook")
    if enforce not in ("hook", "policy"):
        raise BudgetConfigError("budgets.enforce must be hook (429 whatever the policy says) or policy")
    tag = doc.get("hash_tag", "tenant")
    if tag not in (*OWNERS, "single"):
        raise BudgetConfigError("budgets.hash_tag must be tenant, subject or single")
    replicas = doc.get("wait_replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 16:
        raise BudgetConfigError("budgets.wait_replicas must be an integer from 0 to 16")
    synchronous = doc.get("sqlite_synchronous", "normal")
    if synchronous not in ("normal", "full"):
        raise BudgetConfigError("budgets.sqlite_synchronous must be normal or full")
    return BudgetSettings(store, str(mode), limits, prices, zone, out_tokens, float(ttl), enforce=str(enforce),
                          hash_tag=str(tag), wait_replicas=replicas, sqlite_synchronous=str(synchronous))


def _limit(i: int, item: Any) -> Limit:
    where = f"budgets.limits[{i}]"
    if not isinstance(item, dict):
        raise BudgetConfigError(f"{where} must be a mapping")
    problem = unknown_keys(item, _LIMIT_KEYS)
    if problem:
        raise BudgetConfigError(f"{where}: {problem}")
    name = item.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise BudgetConfigError(f"{where}.name must be 1-64 letters, digits, `_`, `.` or `-`")
    if item.get("key") not in KEYS:
        raise BudgetConfigError(f"{where}.key must be one of {', '.join(KEYS)}")
    window = str(item.get("window", ""))
    if not (_ROLLING.match(window) and int(window[:-1]) > 0) and window not in ("day", "month"):
        raise BudgetConfigError(f"{where}.window must be a duration (30s, 1m, 1h, 1d) or day or month")
    caps: dict[str, Any] = {}
    for cap in ("requests", "tokens", "cost_usd"):
        value = item.get(cap)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                cap != "cost_usd" and not isinstance(value, int)):
            raise BudgetConfigError(f"{where}.{cap} must be a non-negative {'number' if cap == 'cost_usd' else 'integer'}")
        caps[cap] = value
    if not caps:
        raise BudgetConfigError(f"{where} sets no cap (requests, tokens or cost_usd)")
    match = item.get("match") or {}
    if not isinstance(match, dict) or set(match) - _MATCH or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in match.values()):
        raise BudgetConfigError(f"{where}.match may have roles, tenants, kinds, models, tools: lists of strings")
    return Limit(name, str(item["key"]), window, caps.get("requests"), caps.get("tokens"),
                 float(caps["cost_usd"]) if "cost_usd" in caps else None,
                 {k: frozenset(v) for k, v in match.items()})


# --- which limits apply, under which key ---------------------------------------------------------

def model_of(action: ParsedAction) -> str:
    return action.name if action.kind == "llm.chat" else ""


def applies(limit: Limit, subject: Subject, action: ParsedAction) -> bool:
    m = limit.match
    model = model_of(action)
    tool = action.name if action.kind == "tool.call" else ""
    return ((not m.get("roles") or bool(m["roles"] & set(subject.roles)))
            and (not m.get("tenants") or (subject.tenant or "") in m["tenants"])
            and (not m.get("kinds") or action.kind in m["kinds"])
            and (not m.get("models") or model in m["models"])
            and (not m.get("tools") or tool in m["tools"]))


def key_value(limit: Limit, subject: Subject, action: ParsedAction) -> str | None:
    """The value a limit counts under (None: the limit has nothing to count this request under)."""
    parts = key_parts(limit, subject, action)
    return None if parts is None else "|".join(f"{part}={value}" for part, value in parts)


def owner(parts: Sequence[tuple[str, str]], hash_tag: str) -> str:
    """Which slot a bucket lives in on a Redis Cluster: `part=value` of the first of its key's parts
    in the configured order ("" with `hash_tag: single`: one slot for everything)."""
    order = OWNERS.get(hash_tag)
    if order is None:
        return ""
    found = dict(parts)
    part = next(p for p in order if p in found)
    return f"{part}={found[part]}"


def key_parts(limit: Limit, subject: Subject, action: ParsedAction) -> list[tuple[str, str]] | None:
    parts: list[tuple[str, str]] = []
    for part in limit.key.split("+"):
        if part == "subject":
            value = subject.id if subject.authenticated else None
        elif part == "tenant":
            value = subject.tenant
        elif part == "api_key":
            value = subject.id if subject.claims.get("auth") == "api_key" else None
        elif part == "model":
            value = model_of(action) or None
        else:
            value = action.name if action.kind == "tool.call" else None
        if not value:
            return None
        parts.append((part, value))
    return parts


# --- windows -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    bucket: str  # where usage is counted: limit, key and (for calendar windows) the period
    since: float  # epoch seconds: usage at or after this counts (rolling: now - window)
    reset_at: float  # when the whole window has turned over (calendar: the next period)


def period(limit: Limit, key: str, now: float, zone: ZoneInfo) -> Period:
    rolling = limit.rolling_s
    if rolling is not None:
        return Period(f"{limit.name}|{key}", now - rolling, now + rolling)
    label, start, end = calendar_window(limit.window, zone, now)
    return Period(f"{limit.name}|{key}|{label}", start, end)


# The current day and month per zone: every request in them computes the same window, and working it
# out (a zoned datetime, replace, timedelta, timestamp) cost ~5 µs a limit (measured).
_WINDOWS: dict[tuple[str, str], tuple[str, float, float]] = {}


def calendar_window(window: str, zone: ZoneInfo, now: float) -> tuple[str, float, float]:
    """(label, start, end) of the calendar `window` ("day" or "month") in `zone` that holds `now`."""
    cached = _WINDOWS.get((window, zone.key))
    if cached is not None and cached[1] <= now < cached[2]:
        return cached
    local = datetime.fromtimestamp(now, zone)
    if window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=1, hours=2)).replace(hour=0)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    found = (start.date().isoformat(), start.timestamp(), end.timestamp())
    _WINDOWS[(window, zone.key)] = found
    return found


# --- estimates -------------------------------------------------------------------------------------

def estimate_tokens(action: ParsedAction, default_output: int) -> tuple[int, int]:
    """(prompt, output) tokens to reserve: the prompt's characters / 4, rounded up, and the request's
    output limit (already multiplied by the choices it asks for), or the configured default per choice
    when it names none."""
    chars = sum(len(text) for _, text in action.texts)
    prompt = math.ceil(chars / CHARS_PER_TOKEN)
    limit = action.arguments.get("max_tokens")
    choices = action.arguments.get("n", 1)
    choices = choices if isinstance(choices, int) and not isinstance(choices, bool) and choices > 0 else 1
    output = limit if isinstance(limit, int) and not isinstance(limit, bool) else default_output * choices
    return prompt, output


def cost(prices: Mapping[str, tuple[float, float]], model: str, prompt: int, output: int) -> float:
    price = prices.get(model)
    if price is None:
        return 0.0
    return (prompt * price[0] + output * price[1]) / 1_000_000


@dataclass(frozen=True)
class Charge:
    """What one request asks of one limit."""

    limit: Limit
    period: Period
    requests: int
    tokens: int
    cost_usd: float
    owner: str = ""  # the hash tag of its bucket on a Redis Cluster (see `owner`)


def charges_for(settings: BudgetSettings, subject: Subject, actions: Sequence[ParsedAction],
                now: float) -> list[Charge]:
    out: list[Charge] = []
    for action in actions:
        prompt, output = estimate_tokens(action, settings.default_output_tokens) if action.kind == "llm.chat" \
            else (0, 0)
        usd = cost(settings.prices, model_of(action), prompt, output)
        for limit in settings.limits:
            if not applies(limit, subject, action):
                continue
            override = settings.tenant_caps.get(limit.name, {}).get(subject.tenant or "")
            if override:
                limit = replace(limit, **override)
            parts = key_parts(limit, subject, action)
            if parts is None:
                continue
            key = "|".join(f"{part}={value}" for part, value in parts)
            out.append(Charge(limit, period(limit, key, now, settings.time_zone), 1, prompt + output, usd,
                              owner(parts, settings.hash_tag)))
    return out
