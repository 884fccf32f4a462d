"""The AuthZEN Authorization API 1.0 (OpenID Foundation, final January 2026) on the HTTP listener:
a standard JSON API for callers that are not Envoy, beside the gRPC decision service.

    POST /access/v1/evaluation    {subject, action, resource, context?} -> {decision, context}
    POST /access/v1/evaluations   {subject?, action?, resource?, context?, evaluations: [...],
                                   options?: {evaluations_semantic}} -> {evaluations: [...]}
    GET  /.well-known/authzen-configuration

Mapping to agentgov's policy input: `subject` {type, id, properties} → subject {id, roles, tenant,
claims: properties} (`properties.roles`, `properties.tenant`); `action.name` is agentgov's action
kind (`tool.call`, `llm.chat`, …) and `resource` {type, id} names what it acts on (`tool`
`crm.query`); `action.properties.arguments` are the tool arguments or LLM parameters (the PII hook
scans them); `context` joins the input's context. Like OPA's Data API, the caller (a policy
enforcement point) states the subject, and it is taken as authenticated: serve this port only to
trusted callers (loopback by default), and with `server.data_api_token_file` a bearer token is
required. Every evaluation runs the same staged runner as the gateway (hooks, audit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agentgov.engine.errors import REASON_INTERNAL, Failure
from agentgov.engine.keys import unknown_keys
from agentgov.engine.metrics import count_decision
from agentgov.engine.pipeline import Governor
from agentgov.engine.policy_input import InputError, normalize_input
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json
from agentgov.engine.server.failures import door_failed
from agentgov.engine.server.http_authz import Handler, Request, Response, header_value_ok, token_matches

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
CONFIGURATION = "/.well-known/authzen-configuration"
MAX_EVALUATIONS = 256  # per batch, as the decision service's BatchDecide
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
_TOP = {"subject", "action", "resource", "context"}


class AuthzenError(ValueError):
    """A request AuthZEN's shapes do not allow: 400, with what was wrong."""


def _json(status: int, doc: Mapping[str, Any], request_id: str = "") -> Response:
    headers = [("content-type", "application/json")]
    if request_id and header_value_ok(request_id[:200]):  # echoed only when it is safe to write back
        headers.append(("x-request-id", request_id[:200]))
    return Response(status, headers, json.dumps(doc).encode())


def _entity(doc: Any, name: str, *, kind_key: str = "type") -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise AuthzenError(f"`{name}` must be an object")
    problem = unknown_keys(doc, {kind_key, "id", "properties"}, f"{name}.")
    if problem:
        raise AuthzenError(problem)
    properties = doc.get("properties", {})
    if not isinstance(properties, dict):
        raise AuthzenError(f"`{name}.properties` must be an object")
    return doc


def policy_input(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """One AuthZEN evaluation as agentgov's policy input (validated against its schema)."""
    problem = unknown_keys(evaluation, _TOP)
    if problem:
        raise AuthzenError(problem)
    for key in ("subject", "action", "resource"):
        if key not in evaluation:
            raise AuthzenError(f"`{key}` is required")
    subject = _entity(evaluation["subject"], "subject")
    action = _entity(evaluation["action"], "action", kind_key="name")
    resource = _entity(evaluation["resource"], "resource")
    for name, doc, fields in (("subject", subject, ("type", "id")), ("action", action, ("name",)),
                              ("resource", resource, ("type", "id"))):
        for field_name in fields:
            if not isinstance(doc.get(field_name), str) or not doc[field_name]:
                raise AuthzenError(f"`{name}.{field_name}` must be a non-empty string")
    context = evaluation.get("context", {})
    if not isinstance(context, dict):
        raise AuthzenError("`context` must be an object")
    props = subject.get("properties", {})
    roles = props.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthzenError("`subject.properties.roles` must be a list of strings")
    tenant = props.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise AuthzenError("`subject.properties.tenant` must be a string")
    arguments = action.get("properties", {}).get("arguments", {})
    if not isinstance(arguments, dict):
        raise AuthzenError("`action.properties.arguments` must be an object")
    doc = {
        "subject": {"id": subject["id"], "roles": roles, "tenant": tenant, "authenticated": True,
                    "claims": {k: v for k, v in props.items() if k not in ("roles", "tenant")}},
        "action": {"kind": action["name"], "name": resource["id"]},
        "resource": {"type": resource["type"], "id": resource["id"]},
        "arguments": arguments,
        "context": {"time": datetime.now(UTC).isoformat(), **context},
    }
    try:
        return normalize_input(doc)
    except InputError as exc:
        raise AuthzenError(str(exc)) from None


def _merge(defaults: Mapping[str, Any], item: Any) -> dict[str, Any]:
    """An item of a batch over the request's defaults (each of subject/action/resource/context is
    taken whole from the item when it has it, else from the defaults)."""
    if not isinstance(item, dict):
        raise AuthzenError("every item of `evaluations` must be an object")
    return {**{k: v for k, v in defaults.items() if k in _TOP}, **item}


def authzen_routes(governor: Governor, *, token: str | None = None, base_url: str = "") -> dict[str, Handler]:
    expected = token.encode() if token else None

    async def decide(evaluation: Mapping[str, Any]) -> dict[str, Any]:
        verdict = await governor.decide_stated(policy_input(evaluation), entry_point="authzen")
        d = verdict.decision
        count_decision("authzen", d)
        return {"decision": d.allow, "context": {
            "decision_id": verdict.decision_id, "status": d.status, "reasons": list(d.reasons),
            "obligations": d.obligations.to_dict(),
            "policy_revision": verdict.policy_revision,
            **(d.approval.fields() if d.approval else {})}}

    async def refuse(failure: Failure, reason: str, detail: str, request_id: str) -> Response:
        """A request AuthZEN could not decide: recorded (audited, counted) and answered with the table's
        status, `decision: false` (fail closed for clients that read only that) and the decision id."""
        verdict = await door_failed("authzen", failure, reason, local=governor, why=detail)
        doc = {"error": failure.answer.error if failure is not Failure.MALFORMED else "bad_request",
               "decision": False, "decision_id": verdict.decision_id}
        if detail and failure is not Failure.INTERNAL:
            doc["detail"] = detail
        return _json(failure.answer.door_status, doc, request_id)

    async def route(request: Request) -> Response:
        request_id = request.headers.get("x-request-id", "")
        try:
            return await answer(request, request_id)
        except Exception:
            return await refuse(Failure.INTERNAL, REASON_INTERNAL, "", request_id)

    async def answer(request: Request, request_id: str) -> Response:
        path = request.target.split("?", 1)[0]
        if path == CONFIGURATION:
            if request.method != "GET":
                return _json(405, {"error": "method_not_allowed"}, request_id)
            return _json(200, {"policy_decision_point": base_url, "access_evaluation_endpoint": base_url + EVALUATION,
                               "access_evaluations_endpoint": base_url + EVALUATIONS}, request_id)
        if path not in (EVALUATION, EVALUATIONS):
            return _json(404, {"error": "not_found"}, request_id)
        if request.method != "POST":
            return _json(405, {"error": "method_not_allowed"}, request_id)
        if expected is not None and not token_matches(request.headers.get("authorization", ""), expected):
            return await refuse(Failure.UNAUTHENTICATED, "unauthorized", "", request_id)
        try:
            body = decode_json(request.body)
            if not isinstance(body, dict):
                raise AuthzenError("the request body must be a JSON object")
            if path == EVALUATION:
                return _json(200, await decide(body), request_id)
            return _json(200, {"evaluations": await _batch(body)}, request_id)
        except (AuthzenError, ProtocolError) as exc:
            return await refuse(Failure.MALFORMED, "bad_request", str(exc), request_id)

    async def _batch(body: Mapping[str, Any]) -> list[dict[str, Any]]:
        items = body.get("evaluations")
        problem = unknown_keys(body, _TOP | {"evaluations", "options"})
        if problem:
            raise AuthzenError(problem)
        options = body.get("options", {})
        if not isinstance(options, dict):
            raise AuthzenError("`options` must be an object")
        semantic = options.get("evaluations_semantic", "execute_all")
        if semantic not in SEMANTICS:
            raise AuthzenError(f"`options.evaluations_semantic` must be one of {', '.join(SEMANTICS)}")
        if items is None:  # no list: the request is one evaluation, answered as a list of one
            return [await decide({k: v for k, v in body.items() if k in _TOP})]
        if not isinstance(items, list) or not items:
            raise AuthzenError("`evaluations` must be a non-empty list")
        if len(items) > MAX_EVALUATIONS:
            raise AuthzenError(f"at most {MAX_EVALUATIONS} evaluations per request")
        merged = [_merge(body, item) for item in items]
        for evaluation in merged:
            policy_input(evaluation)  # every item is checked before any is decided: all or nothing
        answers: list[dict[str, Any]] = []
        for evaluation in merged:
            answer = await decide(evaluation)
            answers.append(answer)
            if (semantic == "deny_on_first_deny" and not answer["decision"]) or \
                    (semantic == "permit_on_first_permit" and answer["decision"]):
                break
        return answers

    return {CONFIGURATION: route, "/access/v1/": route}
