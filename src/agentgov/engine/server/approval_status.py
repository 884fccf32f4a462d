"""`GET /approvals/v1/{id}` on the HTTP door: where a caller that was told `approval_required` asks
how its approval stands (the `status_url` of the refusal).

The approval id is an unguessable capability (96 random bits) handed only to the caller that asked;
the answer says where the approval stands and for which action, never the call's arguments, the
asking subject or who decided.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from agentgov.engine.approvals.settings import STATUS_PATH
from agentgov.engine.approvals.store import Approval, ApprovalStore, ApprovalStoreError, utc_instant
from agentgov.engine.server.http_authz import Handler, Request, Response

log = logging.getLogger("agentgov.approvals")
_ID = re.compile(r"apr_[0-9a-f]{24}")


def _json(status: int, doc: Mapping[str, Any]) -> Response:
    return Response(status, [("content-type", "application/json"), ("cache-control", "no-store")],
                    json.dumps(doc).encode())


def status_document(approval: Approval, now: float) -> dict[str, Any]:
    """The caller's view: a pending or approved approval past its time reads as expired."""
    status = approval.status
    if status in ("pending", "approved") and approval.expires_at <= now:
        status = "expired"
    return {"approval_id": approval.id, "status": status,
            "action": {"kind": approval.kind, "name": approval.name},
            "reason": approval.reason, "approvers": list(approval.approvers),
            "uses": approval.uses, "uses_left": approval.uses_left if status == "approved" else 0,
            "expires_at": utc_instant(approval.expires_at)}


def approval_status_routes(store: ApprovalStore) -> dict[str, Handler]:
    async def route(request: Request) -> Response:
        if request.method != "GET":
            return _json(405, {"error": "method_not_allowed"})
        approval_id = request.target.split("?", 1)[0][len(STATUS_PATH):]
        if not _ID.fullmatch(approval_id):
            return _json(404, {"error": "not_found"})
        try:
            approval = await store.get(approval_id)
        except ApprovalStoreError:
            return _json(503, {"error": "unavailable", "detail": "the approvals store did not answer"})
        except Exception:
            log.exception("approval status %s", approval_id)
            return _json(500, {"error": "internal"})
        if approval is None:
            return _json(404, {"error": "not_found"})
        return _json(200, status_document(approval, time.time()))

    return {STATUS_PATH: route}
