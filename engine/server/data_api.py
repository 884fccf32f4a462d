"""OPA's Data API (`POST /v1/data/{path}` with `{"input": …}` → `{"result": …}`) over agentgov backends.

So OPA clients, opa-python-client included, can query agentgov as if it were OPA. Only the
decision rule's path (and its parent package, which returns `{"<rule>": …}`) is served: agentgov
evaluates decisions, it does not expose policy internals or data.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

from agentgov.engine.governor import Governor
from agentgov.engine.metrics import LATENCY, count_decision
from agentgov.engine.policy_input import InputError, normalize_input

log = logging.getLogger("agentgov.data_api")
_LATENCY = LATENCY.labels(api="data_api")


def _error(status: int, code: str, message: str) -> web.Response:
    """OPA's error body: {code, message}."""
    return web.json_response({"code": code, "message": message}, status=status)


def create_app(governor: Governor, rule: str) -> web.Application:
    """The Governor's staged runner, fed a stated input: hooks run (the PII hook scans the arguments),
    the subject is the caller's word. In OPA-Envoy mode inputs are taken as they are (an object)."""
    input_format = governor.options.input_format
    rule_path = rule.removeprefix("data.").replace(".", "/")
    package_path, _, rule_name = rule_path.rpartition("/")

    async def query(request: web.Request) -> web.Response:
        path = request.match_info["path"].strip("/")
        if path not in (rule_path, package_path):
            # OPA answers an undefined document with 200 and no `result`.
            return web.json_response({})
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as exc:
            return _error(400, "invalid_parameter", f"request body is not valid JSON: {exc.msg}")
        if not isinstance(body, dict) or "input" not in body:
            return _error(400, "invalid_parameter", "request body must be an object with an `input` document")
        try:
            if input_format == "agentgov":
                policy_input = normalize_input(body["input"])
            elif isinstance(body["input"], dict):
                policy_input = body["input"]
            else:
                raise InputError("input must be an object")
        except InputError as exc:
            return _error(400, "invalid_parameter", str(exc))
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

    async def health(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/v1/data/{path:.*}", query)
    app.router.add_get("/health", health)
    return app
