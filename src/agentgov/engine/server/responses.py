"""Decision → Envoy CheckResponse, exactly as docs/architecture.md §3 says (status, JSON body, identity headers).

In OPA-Envoy compatibility mode a decision also carries `HttpDirectives` (the plugin's headers,
body, status, query parameters and dynamic metadata); they are applied here, and agentgov's own
guarantees still hold on top: identity headers overwrite, client-sent `x-agentgov-*` are removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from google.rpc import code_pb2, status_pb2

from agentgov.engine.errors import category_of, error_code
from agentgov.engine.model import ApprovalNote, HttpDirectives, json_default
from agentgov.engine.pipeline import Verdict
from agentgov.engine.server.exchange import EXCHANGE_KEY, exchange_metadata

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


def _struct(doc: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(json.loads(json.dumps(dict(doc), default=json_default)))
    return s


# The JSON-RPC error code of an MCP call that waits for a person (a stable contract: docs/approvals.md).
# In the implementation-defined server-error range -32000..-32099, clear of the codes MCP assigns.
APPROVAL_REQUIRED_RPC_CODE = -32010


def waiting_of(verdict: Verdict) -> ApprovalNote | None:
    """The approval a refusal waits for (None for any other answer)."""
    d = verdict.decision
    return None if d.allow else d.approval


def error_body(status: int, reasons: Iterable[str], decision_id: str, detail: str = "",
               waiting: ApprovalNote | None = None) -> bytes:
    doc: dict[str, Any] = {"error": error_code(status), "reasons": list(reasons), "decision_id": decision_id}
    if detail:
        doc["detail"] = detail
    if waiting is not None:
        doc.update(waiting.fields())  # the approval this call waits for (docs/approvals.md)
        if waiting.jsonrpc:
            doc = {"jsonrpc": "2.0", "id": waiting.rpc_id,
                   "error": {"code": APPROVAL_REQUIRED_RPC_CODE, "message": "approval required", "data": doc}}
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class Allowed:
    """An allow, independent of the transport that carries it to Envoy."""

    upstream: list[tuple[str, str]]  # set on the request to the backend (a repeated name is appended)
    remove: list[str]  # removed from it: spoofed x-agentgov-*, consumed credentials, the policy's removals
    client: list[tuple[str, str, bool]]  # added to the response to the client (name, value, append)


@dataclass(frozen=True)
class Denied:
    status: int
    headers: list[tuple[str, str, bool]]  # to the client (name, value, append)
    body: str


def allowed(verdict: Verdict, client_headers: Iterable[str]) -> Allowed:
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
    client = [(k, v, True) for k, v in directives.response_headers_to_add] + \
        [(k, v, False) for k, v in verdict.response_headers.items()]
    return Allowed(policy_headers + list(ours.items()), removed, client)


def denied(verdict: Verdict) -> Denied:
    d = verdict.decision
    return deny_parts(d.status, d.reasons, verdict.decision_id, verdict.retry_after_s, d.directives, d.detail,
                      verdict.response_headers, verdict.policy_revision, waiting_of(verdict))


def deny_parts(status: int, reasons: Iterable[str], decision_id: str, retry_after_s: int | None = None,
               directives: HttpDirectives | None = None, detail: str = "",
               extra_headers: Mapping[str, str] | None = None, policy_revision: str = "",
               waiting: ApprovalNote | None = None) -> Denied:
    reasons = list(reasons)
    policy_body = directives.body if directives is not None else None
    headers: list[tuple[str, str, bool]] = []
    if policy_body is None:
        headers.append(("content-type", "application/json", False))
    headers.append(("x-agentgov-decision-id", decision_id, False))
    if policy_revision:
        headers.append((POLICY_REVISION_HEADER, policy_revision, False))
    if status == 401:
        code = reasons[0] if reasons else "invalid_token"
        headers.append(("www-authenticate", f'Bearer realm="agentgov", error="invalid_token", '
                                            f'error_description="{code}"', False))
    if status == 429:
        headers.append(("retry-after", str(retry_after_s or DEFAULT_RETRY_AFTER_S), False))
        headers.extend((k, v, False) for k, v in (extra_headers or {}).items())
    if directives is not None:
        headers = _pairs_with_append(directives.headers) + headers
    body = policy_body if policy_body is not None else error_body(status, reasons, decision_id, detail,
                                                                   waiting).decode()
    return Denied(status, headers, body)


def _pairs_with_append(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str, bool]]:
    """The first value of a name replaces what the request had; repeats are appended, so lists survive."""
    seen: set[str] = set()
    out = []
    for name, value in pairs:
        key = name.lower()
        out.append((key, value, key in seen))
        seen.add(key)
    return out


# --- gRPC ext_authz (CheckResponse) -----------------------------------------------------------

def _options(headers: Iterable[tuple[str, str, bool]]) -> list[base_pb2.HeaderValueOption]:
    return [_header(k, v, _APPEND if append else _OVERWRITE) for k, v, append in headers]


def allow_response(verdict: Verdict, client_headers: Iterable[str], *, exchange: bool = False) -> authz.CheckResponse:
    """`exchange`: also emit what ext_proc needs to finish the exchange (see server/exchange.py)."""
    parts = allowed(verdict, client_headers)
    directives = verdict.decision.directives or HttpDirectives()
    ok = authz.OkHttpResponse(
        headers=_options(_pairs_with_append(parts.upstream)),
        headers_to_remove=parts.remove,
        response_headers_to_add=_options(parts.client),
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
                  extra_headers: Mapping[str, str] | None = None, policy_revision: str = "",
                  waiting: ApprovalNote | None = None) -> authz.CheckResponse:
    parts = deny_parts(status, reasons, decision_id, retry_after_s, directives, detail, extra_headers, policy_revision,
                       waiting)
    denied_http = authz.DeniedHttpResponse(status=http_status_pb2.HttpStatus(code=parts.status),
                                           headers=_options(parts.headers), body=parts.body)
    grpc_code = code_pb2.Code.Value(category_of(status).answer.grpc_check)
    response = authz.CheckResponse(status=status_pb2.Status(code=grpc_code), denied_response=denied_http)
    if directives is not None and directives.dynamic_metadata:
        response.dynamic_metadata.CopyFrom(_struct(directives.dynamic_metadata))
    return response


def verdict_response(verdict: Verdict, client_headers: Iterable[str], *, exchange: bool = False) -> authz.CheckResponse:
    d = verdict.decision
    if d.allow:
        return allow_response(verdict, client_headers, exchange=exchange)
    return deny_response(d.status, d.reasons, verdict.decision_id, verdict.retry_after_s, d.directives, d.detail,
                         verdict.response_headers, verdict.policy_revision, waiting_of(verdict))
