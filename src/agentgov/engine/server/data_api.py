"""OPA's Data API (`POST /v1/data/{path}` with `{"input": …}` → `{"result": …}`) over agentgov backends.

So OPA clients, opa-python-client included, can query agentgov as if it were OPA. Only the
decision rule's path (and its parent package, which returns `{"<rule>": …}`) is served: agentgov
evaluates decisions, it does not expose policy internals or data.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from agentgov.engine.errors import Failure
from agentgov.engine.metrics import LATENCY, count_decision
from agentgov.engine.pipeline import Governor
from agentgov.engine.policy_input import InputError, normalize_input
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json
from agentgov.engine.server.failures import door_failed
from agentgov.engine.server.http_authz import token_matches

log = logging.getLogger("agentgov.data_api")
_LATENCY = LATENCY.labels(api="data_api")


def _error(status: int, code: str, message: str, decision_id: str = "") -> web.Response:
    """OPA's error body: {code, message}, with agentgov's decision id when the failure was recorded."""
    doc = {"code": code, "message": message}
    if decision_id:
        doc["decision_id"] = decision_id
    return web.json_response(doc, status=status)


# OPA's error codes for the error table's categories (what OPA's own server answers for each).
_OPA_CODES = {Failure.MALFORMED: "invalid_parameter", Failure.TOO_LARGE: "invalid_parameter",
              Failure.UNAUTHENTICATED: "unauthorized", Failure.INTERNAL: "internal_error"}


MAX_BODY_BYTES = 1024 * 1024
BUNDLE_NAME = "agentgov"  # served at /bundles/agentgov (and /bundles/agentgov.tar.gz)


def create_app(governor: Governor, rule: str, *, token: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, serve_bundles: bool = False) -> web.Application:
    """The Governor's staged runner, fed a stated input: hooks run (the PII hook scans the arguments),
    the subject is the caller's word. In OPA-Envoy mode inputs are taken as they are (an object).

    Because the caller states the subject, the Data API listens on loopback by default, and `token`
    (like OPA's `--authentication=token`) requires `Authorization: Bearer <token>` on every query.
    Bodies are read as strictly as a request body at the gateway (size, depth, repeated keys)."""
    input_format = governor.options.input_format
    expected = token.encode() if token else None
    rule_path = rule.removeprefix("data.").replace(".", "/")
    package_path, _, rule_name = rule_path.rpartition("/")

    async def refuse(failure: Failure, message: str) -> web.Response:
        """A query the Data API could not decide: recorded (audited, counted) and answered in OPA's shape."""
        code = _OPA_CODES.get(failure, "internal_error")
        verdict = await door_failed("data_api", failure, code, local=governor, why=message)
        return _error(failure.answer.door_status, code, message, verdict.decision_id)

    async def query(request: web.Request) -> web.Response:
        try:
            return await decide(request)
        except Exception:
            return await refuse(Failure.INTERNAL, "internal error (see the server log)")

    async def decide(request: web.Request) -> web.Response:
        if expected is not None and not token_matches(request.headers.get("authorization", ""), expected):
            return await refuse(Failure.UNAUTHENTICATED, "the request requires a valid bearer token")
        path = request.match_info["path"].strip("/")
        if path not in (rule_path, package_path):
            # OPA answers an undefined document with 200 and no `result`.
            return web.json_response({})
        if request.content_length is not None and request.content_length > max_body_bytes:
            return await refuse(Failure.TOO_LARGE, f"request body is larger than {max_body_bytes} bytes")
        try:
            raw = await request.content.read(max_body_bytes + 1)
        except (OSError, ValueError):
            return await refuse(Failure.MALFORMED, "request body could not be read")
        if len(raw) > max_body_bytes:
            return await refuse(Failure.TOO_LARGE, f"request body is larger than {max_body_bytes} bytes")
        try:
            body = decode_json(raw) if raw.strip() else {}
        except ProtocolError as exc:
            return await refuse(Failure.MALFORMED, str(exc))
        if not isinstance(body, dict) or "input" not in body:
            return await refuse(Failure.MALFORMED, "request body must be an object with an `input` document")
        try:
            if input_format == "agentgov":
                policy_input = normalize_input(body["input"])
            elif isinstance(body["input"], dict):
                policy_input = body["input"]
            else:
                raise InputError("input must be an object")
        except InputError as exc:
            return await refuse(Failure.MALFORMED, str(exc))
        started = time.perf_counter()
        verdict = await governor.decide_stated(policy_input)
        decision = verdict.decision
        count_decision("data_api", decision)
        _LATENCY.observe(time.perf_counter() - started)
        document: dict[str, Any] = decision.to_dict()
        document.pop("errors", None)  # engine internals stay in the server log, not the answer
        if decision.errors:
            log.warning("decision error on %s: %s", path, "; ".join(decision.errors))
        result: Any = document if path == rule_path else {rule_name: document}
        return web.json_response({"result": result})

    async def health(request: web.Request) -> web.Response:
        """OPA's health check: 200 while serving; with `?bundles`, 500 until a policy set is active
        (OPA: until bundles are activated). The body adds the active revision and each bundle's
        state: a refused or unreachable bundle shows in `bundles.<name>.last_error`."""
        policy = governor.policy
        body: dict[str, Any] = {"policy": {"revision": policy.label, "available": policy.available}}
        status = governor.service_status()
        if status:
            body["bundles"] = status
        if "bundles" in request.query and not policy.available:
            body["error"] = "no policy set is active"
            return web.json_response(body, status=500)
        return web.json_response(body)

    async def bundle(request: web.Request) -> web.Response:
        """OPA's bundle service API: the active bundle, with its digest as ETag (304 when unchanged),
        so OPA agents (`services` + `bundles` in their config) can pull what this agentgov enforces."""
        if expected is not None and not token_matches(request.headers.get("authorization", ""), expected):
            return _error(401, "unauthorized", "the request requires a valid bearer token")
        if request.match_info["name"] not in (BUNDLE_NAME, f"{BUNDLE_NAME}.tar.gz"):
            return _error(404, "resource_not_found", f"no such bundle (this server serves {BUNDLE_NAME})")
        policy = governor.policy
        if policy.blob is None:
            return _error(404, "resource_not_found", "no bundle is active")
        etag = f'"sha256:{policy.digest}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in (t.strip() for t in request.headers.get("If-None-Match", "").split(",")):
            return web.Response(status=304, headers=headers)
        return web.Response(body=policy.blob, content_type="application/gzip", headers=headers)

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post("/v1/data/{path:.*}", query)
    app.router.add_get("/health", health)
    if serve_bundles:
        app.router.add_get("/bundles/{name}", bundle)
    return app
