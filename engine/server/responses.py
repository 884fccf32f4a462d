"""Decision → Envoy CheckResponse, exactly as docs/architecture.md §3 says (status, JSON body, identity headers).

In OPA-Envoy compatibility mode a decision also carries `HttpDirectives` (the plugin's headers,
body, status, query parameters and dynamic metadata); they are applied here, and agentgov's own
guarantees still hold on top: identity headers overwrite, client-sent `x-agentgov-*` are removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from google.rpc import code_pb2, status_pb2

from agentgov.engine.governor import Verdict
from agentgov.engine.model import HttpDirectives, json_default
from agentgov.engine.server.exchange import EXCHANGE_KEY, exchange_metadata

_ERRORS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 413: "payload_too_large", 415: "unsupported_media_type",
           429: "rate_limited", 503: "unavailable"}
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
DEFAULT_RETRY_AFTER_S = 60


# The policy set that decided (`<revision>@sha256:<digest>`): to the backend with an allow, to the
# client with a deny, so either side can tell which policy answered.
POLICY_REVISION_HEADER = "x-agentgov-policy-revision"


def _header(name: str, value: str, action: int = _OVERWRITE) -> base_pb2.HeaderValueOption:
    if action == _APPEND:
        # ext_authz reads the older `append` flag for request headers, not `append_action`.
        return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value),
                                          append=wrappers_pb2.BoolValue(value=True))
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), append_action=action)


def _headers(pairs: Iterable[tuple[str, str]]) -> list[base_pb2.HeaderValueOption]:
    """The first value of a name replaces what the request had; repeats are appended, so lists survive."""
    seen: set[str] = set()
    out = []
    for name, value in pairs:
        key = name.lower()
        out.append(_header(key, value, _APPEND if key in seen else _OVERWRITE))
        seen.add(key)
    return out


def _struct(doc: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(json.loads(json.dumps(dict(doc), default=json_default)))
    return s


def error_body(status: int, reasons: Iterable[str], decision_id: str, detail: str = "") -> bytes:
    doc: dict[str, Any] = {"error": _ERRORS.get(status, "denied"), "reasons": list(reasons), "decision_id": decision_id}
    if detail:
        doc["detail"] = detail
    return json.dumps(doc).encode()


def allow_response(verdict: Verdict, client_headers: Iterable[str], *, exchange: bool = False) -> authz.CheckResponse:
    """`exchange`: also emit what ext_proc needs to finish the exchange (see server/exchange.py)."""
    subject = verdict.subject
    directives = verdict.decision.directives or HttpDirectives()
    ours = {
        "x-agentgov-subject": subject.id,
        "x-agentgov-tenant": subject.tenant or "",
        "x-agentgov-roles": ",".join(subject.roles),
        "x-agentgov-decision-id": verdict.decision_id,
        POLICY_REVISION_HEADER: verdict.policy_revision,
        **verdict.decision.obligations.headers,
    }
    policy_headers = [(k, v) for k, v in directives.headers if k.lower() not in ours]
    # Client-supplied x-agentgov-* never reach the backend: ours overwrite, the rest are removed.
    spoofed = {h for h in client_headers if h.startswith("x-agentgov-") and h not in ours}
    removed = sorted(spoofed | set(verdict.consumed_headers)
                     | {h.lower() for h in directives.request_headers_to_remove if h.lower() not in ours})
    ok = authz.OkHttpResponse(
        headers=_headers(policy_headers) + [_header(k, v) for k, v in ours.items()],
        headers_to_remove=removed,
        response_headers_to_add=[_header(k, v, _APPEND) for k, v in directives.response_headers_to_add]
        + [_header(k, v) for k, v in verdict.response_headers.items()],
        query_parameters_to_set=[base_pb2.QueryParameter(key=k, value=v) for k, v in directives.query_parameters_to_set],
        query_parameters_to_remove=list(directives.query_parameters_to_remove),
    )
    response = authz.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)
    metadata = dict(directives.dynamic_metadata)
    if exchange:
        metadata[EXCHANGE_KEY] = exchange_metadata(verdict)  # ours wins over a policy's key of that name
    if metadata:
        response.dynamic_metadata.CopyFrom(_struct(metadata))
    return response


def deny_response(status: int, reasons: Iterable[str], decision_id: str, retry_after_s: int | None = None,
                  directives: HttpDirectives | None = None, detail: str = "",
                  extra_headers: Mapping[str, str] | None = None, policy_revision: str = "") -> authz.CheckResponse:
    reasons = list(reasons)
    policy_body = directives.body if directives is not None else None
    own_body = policy_body is None
    headers = [_header("x-agentgov-decision-id", decision_id)]
    if policy_revision:
        headers.append(_header(POLICY_REVISION_HEADER, policy_revision))
    if own_body:
        headers.insert(0, _header("content-type", "application/json"))
    if status == 401:
        code = reasons[0] if reasons else "invalid_token"
        headers.append(_header("www-authenticate", f'Bearer realm="agentgov", error="invalid_token", '
                                                   f'error_description="{code}"'))
    if status == 429:
        headers.append(_header("retry-after", str(retry_after_s or DEFAULT_RETRY_AFTER_S)))
        headers.extend(_header(k, v) for k, v in (extra_headers or {}).items())
    if directives is not None:
        headers = _headers(directives.headers) + headers
    body = policy_body if policy_body is not None else error_body(status, reasons, decision_id, detail).decode()
    denied = authz.DeniedHttpResponse(status=http_status_pb2.HttpStatus(code=status), headers=headers, body=body)
    grpc_code = code_pb2.UNAUTHENTICATED if status == 401 else code_pb2.PERMISSION_DENIED
    response = authz.CheckResponse(status=status_pb2.Status(code=grpc_code), denied_response=denied)
    if directives is not None and directives.dynamic_metadata:
        response.dynamic_metadata.CopyFrom(_struct(directives.dynamic_metadata))
    return response


def verdict_response(verdict: Verdict, client_headers: Iterable[str], *, exchange: bool = False) -> authz.CheckResponse:
    d = verdict.decision
    if d.allow:
        return allow_response(verdict, client_headers, exchange=exchange)
    return deny_response(d.status, d.reasons, verdict.decision_id, verdict.retry_after_s, d.directives, d.detail,
                         verdict.response_headers, verdict.policy_revision)
