"""What ext_authz hands ext_proc about an allowed exchange, as Envoy dynamic metadata.

ext_authz and ext_proc calls of one request may reach different workers, so nothing is kept in
memory between them: ext_authz emits this document with its CheckResponse (Envoy stores it under
the ext_authz filter's namespace) and the ext_proc filter forwards that namespace with each message.
Both ends live here so they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentgov.engine.pipeline import Verdict

EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
EXCHANGE_KEY = "agentgov"
# Over the HTTP transport the document travels as this response header, which Envoy turns into
# dynamic metadata (`dynamic_metadata_from_headers`) under the same namespace, as a JSON string. Its
# name starts with neither `x-` nor `ratelimit-`, so it reaches neither the backend nor the client.
EXCHANGE_HEADER = "agentgov-exchange"


def exchange_header(verdict: Verdict) -> str:
    """The exchange document as one header value: compact ASCII JSON (no control characters)."""
    return json.dumps(exchange_metadata(verdict), separators=(",", ":"), ensure_ascii=True)


def read_exchange(namespace: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The exchange document from the ext_authz namespace, as either transport left it there."""
    doc = namespace.get(EXCHANGE_KEY)
    if isinstance(doc, dict):
        return doc
    text = namespace.get(EXCHANGE_HEADER)
    if isinstance(text, str):
        try:
            parsed = json.loads(text)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def exchange_metadata(verdict: Verdict) -> dict[str, Any]:
    s = verdict.subject
    return {
        "decision_id": verdict.decision_id,
        "subject": {"id": s.id, "roles": list(s.roles), "tenant": s.tenant or "", "authenticated": s.authenticated},
        "actions": [{"kind": a.kind, "name": a.name, "resource_type": a.resource_type, "resource_id": a.resource_id,
                     "protocol": a.protocol} for a in verdict.actions],
        "redact": list(verdict.decision.obligations.redact),
        "remove_tools": list(verdict.decision.obligations.remove_tools),
        # What ext_proc needs to hold a stream to its budget (reserved output, what was left).
        "budget": {k: v for k, v in ((verdict.inputs[0].get("budget") or {}) if verdict.inputs else {}).items()
                   if k in ("reserved_output_tokens", "remaining_tokens", "estimated_tokens")},
    }
