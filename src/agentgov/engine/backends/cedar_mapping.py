"""The policy input contract, seen through Cedar's eyes (documented in docs/input.md).

- principal: `User::"<subject.id>"` with `roles` (Set<String>), `tenant` (when set), `authenticated`.
- action: `Action::"<action.kind>"`, e.g. `Action::"tool.call"`.
- resource: `<Type>::"<resource.id>"` where Type is resource.type capitalised (`tool` → `Tool`);
  its attributes come from the resource catalog in data (default `data.agentgov.catalog.<type>.<id>`).
- context: `arguments`, `pii` {types, secrets, count}, `budget`, `justification`, `agent`,
  `source_ip`, `http` {method, path, host}, `action_name`, `server`, `phase` (request | response | list).

Cedar has no null and no floats: nulls are dropped, floats become `decimal` (4 places) when they fit,
and other values that do not fit (huge integers) become strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import orjson

from agentgov.engine.backends.cedar_context import WHOLE, Projection, project

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_DECIMAL_LIMIT = Decimal("922337203685477.5807")
_FOUR_PLACES = Decimal("0.0001")


def entity_type(resource_type: str) -> str:
    return "".join(part.capitalize() for part in resource_type.split("_")) or "Resource"


def to_cedar(value: Any) -> Any:
    """Convert a JSON value to Cedar's JSON value encoding; None means 'omit'."""
    # Exact JSON types first, by identity (every decision converts its principal and context, and
    # isinstance against the Mapping ABC was a third of that); anything else takes the general path.
    kind = type(value)
    if kind is str or kind is bool:
        return value
    if kind is dict:
        return {str(k): c for k, v in value.items() if (c := to_cedar(v)) is not None}
    if kind is list:
        return [c for v in value if (c := to_cedar(v)) is not None]
    if value is None:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _LONG_MIN <= value <= _LONG_MAX else str(value)
    if isinstance(value, float):
        return _decimal(value)
    if isinstance(value, Mapping):
        return {str(k): c for k, v in value.items() if (c := to_cedar(v)) is not None}
    if isinstance(value, list | tuple):
        return [c for v in value if (c := to_cedar(v)) is not None]
    return str(value)


def _decimal(value: float) -> Any:
    try:
        d = Decimal(repr(value)).quantize(_FOUR_PLACES, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return repr(value)
    if not d.is_finite() or abs(d) > _DECIMAL_LIMIT:
        return repr(value)
    return {"__extn": {"fn": "decimal", "arg": f"{d:f}"}}


def catalog_entities(catalog: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entity per catalog entry: `{tool: {crm.query: {...}}}` → `Tool::"crm.query"`."""
    out: list[dict[str, Any]] = []
    for rtype, entries in sorted(catalog.items()):
        if not isinstance(entries, Mapping):
            continue
        for rid, attrs in sorted(entries.items()):
            out.append({
                "uid": {"type": entity_type(rtype), "id": str(rid)},
                "attrs": to_cedar(attrs) if isinstance(attrs, Mapping) else {},
                "parents": [],
            })
    return out


def build_request(policy_input: Mapping[str, Any],
                  context_projection: Projection = WHOLE) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (Cedar request, principal entity) for one policy input document, its context cut down
    to `context_projection` (what the policies can read: see cedar_context) before conversion."""
    subject = policy_input.get("subject", {})
    action = policy_input.get("action", {})
    resource = policy_input.get("resource", {})
    pii = policy_input.get("pii", {})
    ctx = policy_input.get("context", {})
    http = policy_input.get("http", {})
    principal = {
        "uid": {"type": "User", "id": str(subject.get("id", "anonymous"))},
        "attrs": to_cedar({
            "roles": list(subject.get("roles", [])),
            "tenant": subject.get("tenant"),
            "authenticated": bool(subject.get("authenticated", False)),
        }),
        "parents": [],
    }
    arguments = policy_input.get("arguments", {})
    escape = cedar_escape_in(arguments)
    if escape:
        # Cedar's JSON reads these keys as an entity reference or an extension value, where Rego (and
        # the backend) see a plain object: one request, two readings. Refused (a deny), never passed on.
        raise ValueError(f"the call's arguments hold a `{escape}` key, which Cedar would read as an "
                         "entity or extension value, not as data")
    context = to_cedar(project({
        "arguments": arguments,
        "pii": {
            "types": list(pii.get("types", [])),
            "secrets": list(pii.get("secrets", [])),
            "count": sum(int(f.get("count", 0)) for f in pii.get("findings", [])),
        },
        "budget": policy_input.get("budget", {}),
        "justification": ctx.get("justification", ""),
        "agent": ctx.get("agent", ""),
        "source_ip": ctx.get("source_ip", ""),
        "http": {k: http.get(k, "") for k in ("method", "path", "host")},
        "action_name": action.get("name", ""),
        "server": resource.get("server") or "",
        "phase": ctx.get("phase") or "request",
    }, context_projection))
    request = {
        "principal": principal["uid"],
        "action": {"type": "Action", "id": str(action.get("kind", ""))},
        "resource": {"type": entity_type(str(resource.get("type", "resource"))), "id": str(resource.get("id", ""))},
        "context": context,
    }
    return request, principal


CEDAR_ESCAPES = ("__entity", "__extn", "__expr")


def cedar_escape_in(value: Any, depth: int = 0) -> str:
    """The first key of Cedar's JSON escapes anywhere in a caller's value ("" when there is none)."""
    if depth > 64:
        return ""
    if type(value) is dict or isinstance(value, Mapping):
        for key, child in value.items():
            if key in CEDAR_ESCAPES:
                return str(key)
            found = cedar_escape_in(child, depth + 1)
            if found:
                return found
    elif type(value) is list or isinstance(value, list | tuple):
        for child in value:
            found = cedar_escape_in(child, depth + 1)
            if found:
                return found
    return ""


def entities_json(entities: list[dict[str, Any]]) -> str:
    """Entities as Cedar's JSON. orjson: a 20,000-tool catalog is one call that holds the GIL, on the
    reload thread beside the event loop (json.dumps held it for ~60 ms there); and each decision
    encodes its principal. to_cedar has already made every value JSON orjson takes (string keys, no
    floats, 64-bit integers), so no fallback encoder is needed."""
    return orjson.dumps(entities).decode()
