"""agentgov.v1 messages ⇄ Governor types, for both ends of the decision service.

The server turns a DecideRequest into an Envelope (or an Envelope plus a described action) and a
Verdict into a DecideResponse; the delegating ext_authz client does the reverse. Both directions
live together so they cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from agentgov.engine.model import ACTION_KINDS, ApprovalNote, Decision, HttpDirectives, Obligations, Subject, json_default
from agentgov.engine.pipeline import Envelope, Verdict
from agentgov.engine.pipeline.policy import CONTEXT_HEADERS, JUSTIFICATION_HEADER
from agentgov.engine.proto import decision_pb2 as pb
from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json, strings_in
from agentgov.engine.protocols.parsed import ParsedAction

# What an ActionRequest's kind acts on, when the caller does not say.
_RESOURCE_TYPES = {"llm.chat": "model", "tool.call": "tool", "tool.list": "server", "resource.read": "resource",
                   "prompt.get": "prompt", "mcp.session": "server", "http": "route"}
# Kinds whose resource is the named thing itself (a server or a route may differ from the name).
_NAMED_BY_RESOURCE = {"tool.call": "tool", "llm.chat": "model", "resource.read": "resource", "prompt.get": "prompt"}
# ActionRequest.context keys and the request headers the Governor reads them from.
_CONTEXT_HEADERS = {**CONTEXT_HEADERS, "justification": JUSTIFICATION_HEADER}


class InvalidRequest(ValueError):
    """A DecideRequest that names nothing decidable: INVALID_ARGUMENT, not a policy deny."""


# --- server side -------------------------------------------------------------------------------

def envelope_from_http(http: pb.HttpRequest) -> Envelope:
    attributes = _json_object(http.envoy_attributes_json, "envoy_attributes_json") if http.envoy_attributes_json \
        else None
    context = (attributes or {}).get("metadataContext", {})
    metadata = context.get("filterMetadata", {}) if isinstance(context, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, dict) for v in metadata.values()):
        raise InvalidRequest("envoy_attributes_json: metadataContext.filterMetadata must map namespaces to objects")
    return Envelope(method=http.method.upper(), path=http.path, host=http.host,
                    headers={k.lower(): v for k, v in http.headers.items()}, body=http.body,
                    body_truncated=http.body_truncated, source_ip=http.source_ip, request_id=http.request_id,
                    envoy_attributes=attributes, filter_metadata=metadata)


def action_from_request(action: pb.ActionRequest) -> tuple[Envelope, ParsedAction]:
    if action.kind not in ACTION_KINDS:
        raise InvalidRequest(f"action.kind must be one of {', '.join(ACTION_KINDS)}, got {action.kind!r}")
    if not action.name:
        raise InvalidRequest("action.name is required")
    unknown = sorted(set(action.context) - {*_CONTEXT_HEADERS, "request_id"})
    if unknown:
        raise InvalidRequest(f"unknown action.context key(s): {', '.join(unknown)}")
    named = _NAMED_BY_RESOURCE.get(action.kind)
    if named and action.resource_id and action.resource_id != action.name:
        # One reading: the policy must not approve one tool (resource_id) while the caller runs another (name).
        raise InvalidRequest(f"action.resource_id ({action.resource_id[:100]}) must name the same {named} as "
                             f"action.name, or be left empty")
    arguments = _json_object(action.arguments_json, "arguments_json") if action.arguments_json else {}
    headers = {header: action.context[key] for key, header in _CONTEXT_HEADERS.items() if key in action.context}
    if action.credential:
        headers["authorization"] = f"Bearer {action.credential}"
    env = Envelope(method="", path="", host=action.server, headers=headers,
                   request_id=action.context.get("request_id", ""))
    parsed = ParsedAction(kind=action.kind, name=action.name,
                          resource_type=action.resource_type or _RESOURCE_TYPES[action.kind],
                          resource_id=action.resource_id or action.name, arguments=arguments,
                          texts=tuple(strings_in(arguments, "arguments")), protocol="sdk")
    return env, parsed


def response_from_verdict(verdict: Verdict, *, include_input: bool) -> pb.DecideResponse:
    d, s = verdict.decision, verdict.subject
    response = pb.DecideResponse(
        decision_id=verdict.decision_id, allow=d.allow, reasons=list(d.reasons), status=d.status,
        obligations=pb.Obligations(redact=list(d.obligations.redact), headers=dict(d.obligations.headers),
                                   remove_tools=list(d.obligations.remove_tools)),
        subject=pb.Subject(id=s.id, roles=list(s.roles), tenant=s.tenant or "", authenticated=s.authenticated),
        retry_after_s=verdict.retry_after_s or 0, detail=d.detail, consumed_headers=list(verdict.consumed_headers),
        policy_revision=verdict.policy_revision,
    )
    if d.approval is not None:
        response.approval_id = d.approval.id
        response.approval_status_url = d.approval.status_url
        if d.approval.jsonrpc:
            response.approval_rpc_id_json = json.dumps(d.approval.rpc_id)
    if include_input:
        response.inputs_json.extend(json.dumps(i, sort_keys=True, default=json_default) for i in verdict.inputs)
    if d.directives is not None:
        x = d.directives
        response.directives.CopyFrom(pb.HttpDirectives(
            headers=_pairs(x.headers), response_headers_to_add=_pairs(x.response_headers_to_add),
            request_headers_to_remove=list(x.request_headers_to_remove), has_body=x.body is not None,
            body=x.body or "", query_parameters_to_set=_pairs(x.query_parameters_to_set),
            query_parameters_to_remove=list(x.query_parameters_to_remove),
            dynamic_metadata_json=json.dumps(dict(x.dynamic_metadata), default=json_default)
            if x.dynamic_metadata else ""))
    return response


# --- client side (an ext_authz server delegating to a remote decision service) ----------------

def http_from_envelope(env: Envelope) -> pb.HttpRequest:
    return pb.HttpRequest(method=env.method, path=env.path, host=env.host, headers=dict(env.headers), body=env.body,
                          body_truncated=env.body_truncated, source_ip=env.source_ip, request_id=env.request_id,
                          envoy_attributes_json=json.dumps(env.envoy_attributes) if env.envoy_attributes else "")


def verdict_from_response(response: pb.DecideResponse) -> Verdict:
    """A remote answer, read strictly: a deny always has a reason and a non-success status."""
    deny_status = response.status if 300 <= response.status <= 599 else 403
    status = 200 if response.allow else deny_status
    directives = None
    if response.HasField("directives"):
        x = response.directives
        directives = HttpDirectives(
            headers=_unpairs(x.headers), response_headers_to_add=_unpairs(x.response_headers_to_add),
            request_headers_to_remove=tuple(x.request_headers_to_remove), body=x.body if x.has_body else None,
            query_parameters_to_set=_unpairs(x.query_parameters_to_set),
            query_parameters_to_remove=tuple(x.query_parameters_to_remove),
            dynamic_metadata=json.loads(x.dynamic_metadata_json) if x.dynamic_metadata_json else {})
    decision = Decision(allow=response.allow, reasons=tuple(response.reasons) or (() if response.allow else ("denied",)),
                        status=status, engine="remote",
                        obligations=Obligations(redact=tuple(response.obligations.redact),
                                                headers=dict(response.obligations.headers),
                                                remove_tools=tuple(response.obligations.remove_tools)),
                        directives=directives, detail=response.detail,
                        approval=_approval(response))
    s = response.subject
    subject = Subject(id=s.id or "anonymous", roles=tuple(s.roles), tenant=s.tenant or None,
                      authenticated=s.authenticated)
    return Verdict(decision, subject, response.decision_id, retry_after_s=response.retry_after_s or None,
                   consumed_headers=tuple(h.lower() for h in response.consumed_headers),
                   policy_revision=response.policy_revision)


def _approval(response: pb.DecideResponse) -> ApprovalNote | None:
    if not response.approval_id:
        return None
    rpc_id: str | int | None = None
    if response.approval_rpc_id_json:
        try:
            value = json.loads(response.approval_rpc_id_json)
        except ValueError:
            value = None  # still answered as a JSON-RPC error, with a null id (JSON-RPC's "unknown")
        rpc_id = value if isinstance(value, str | int) and not isinstance(value, bool) else None
    return ApprovalNote(response.approval_id, "remote", status_url=response.approval_status_url,
                        jsonrpc=bool(response.approval_rpc_id_json), rpc_id=rpc_id)


def _json_object(text: str, field: str) -> dict[str, Any]:
    """Decoded as strictly as a request body (no repeated keys, bounded depth)."""
    try:
        doc = decode_json(text.encode("utf-8"))
    except ProtocolError as exc:
        raise InvalidRequest(f"{field}: {str(exc).replace('request body', 'document')}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"{field} must be a JSON object")
    return doc


def _pairs(pairs: tuple[tuple[str, str], ...]) -> list[pb.Header]:
    return [pb.Header(name=k, value=v) for k, v in pairs]


def _unpairs(headers: Any) -> tuple[tuple[str, str], ...]:
    return tuple((h.name, h.value) for h in headers)
