"""What ext_authz hands ext_proc about an allowed exchange, as Envoy dynamic metadata.

ext_authz and ext_proc calls of one request may reach different workers, so nothing is kept in
memory between them: ext_authz emits this document with its CheckResponse (Envoy stores it under
the ext_authz filter's namespace) and the ext_proc filter forwards that namespace with each message.
Both ends live here so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from agentgov.engine.governor import Verdict

EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
EXCHANGE_KEY = "agentgov"


def exchange_metadata(verdict: Verdict) -> dict[str, Any]:
    s = verdict.subject
    return {
        "decision_id": verdict.decision_id,
        "subject": {"id": s.id, "roles": list(s.roles), "tenant": s.tenant or "", "authenticated": s.authenticated},
        "actions": [{"kind": a.kind, "name": a.name, "resource_type": a.resource_type, "resource_id": a.resource_id,
                     "protocol": a.protocol} for a in verdict.actions],
        "redact": list(verdict.decision.obligations.redact),
        # What ext_proc needs to hold a stream to its budget (reserved output, what was left).
        "budget": {k: v for k, v in ((verdict.inputs[0].get("budget") or {}) if verdict.inputs else {}).items()
                   if k in ("reserved_output_tokens", "remaining_tokens")},
    }
