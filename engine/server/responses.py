"""Decision → Envoy CheckResponse, exactly as DESIGN §3 says (status, JSON body, identity headers)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from agentgov.engine.governor import Verdict

_ERRORS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 413: "payload_too_large",
           429: "rate_limited", 503: "unavailable"}
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
DEFAULT_RETRY_AFTER_S = 60


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE)


def error_body(status: int, reasons: Iterable[str], decision_id: str) -> bytes:
    return json.dumps({"error": _ERRORS.get(status, "denied"), "reasons": list(reasons),
                       "decision_id": decision_id}).encode()


def allow_response(verdict: Verdict, client_headers: Iterable[str]) -> authz.CheckResponse:
    subject = verdict.subject
    ours = {
        "x-agentgov-subject": subject.id,
        "x-agentgov-tenant": subject.tenant or "",
        "x-agentgov-roles": ",".join(subject.roles),
        "x-agentgov-decision-id": verdict.decision_id,
        **verdict.decision.obligations.headers,
    }
    # Client-supplied x-agentgov-* never reach the backend: ours overwrite, the rest are removed.
    spoofed = sorted({h for h in client_headers if h.startswith("x-agentgov-") and h not in ours})
    ok = authz.OkHttpResponse(headers=[_header(k, v) for k, v in ours.items()], headers_to_remove=spoofed)
    return authz.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)


def deny_response(status: int, reasons: Iterable[str], decision_id: str,
                  retry_after_s: int | None = None) -> authz.CheckResponse:
    reasons = list(reasons)
    headers = [_header("content-type", "application/json"), _header("x-agentgov-decision-id", decision_id)]
    if status == 401:
        code = reasons[0] if reasons else "invalid_token"
        headers.append(_header("www-authenticate", f'Bearer realm="agentgov", error="invalid_token", '
                                                   f'error_description="{code}"'))
    if status == 429:
        headers.append(_header("retry-after", str(retry_after_s or DEFAULT_RETRY_AFTER_S)))
    denied = authz.DeniedHttpResponse(status=http_status_pb2.HttpStatus(code=status), headers=headers,
                                      body=error_body(status, reasons, decision_id).decode())
    grpc_code = code_pb2.UNAUTHENTICATED if status == 401 else code_pb2.PERMISSION_DENIED
    return authz.CheckResponse(status=status_pb2.Status(code=grpc_code), denied_response=denied)


def verdict_response(verdict: Verdict, client_headers: Iterable[str]) -> authz.CheckResponse:
    d = verdict.decision
    if d.allow:
        return allow_response(verdict, client_headers)
    retry = None
    if verdict.inputs:
        retry = verdict.inputs[-1].get("budget", {}).get("retry_after_s")
    return deny_response(d.status, d.reasons, verdict.decision_id, retry)
