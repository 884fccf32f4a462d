"""Read an OPA-Envoy plugin result (boolean, or `{allowed, headers, …}`) into a `Decision`.

Follows the plugin's own reading (envoyauth/response.go) so a policy behaves as it did there:
`allowed` is required in an object; headers are an object (or a list of objects) whose values
are strings or lists of strings; unknown keys are ignored, as the plugin ignores them. A value
of the wrong type is a deny: the plugin answers an error, and an error never allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from agentgov.engine.backends.base import REASON_DEFAULT_DENY, REASON_UNDEFINED, invalid_result
from agentgov.engine.model import STATUS_FORBIDDEN, STATUS_OK, Decision, HttpDirectives

_VALID_STATUS = {int(s) for s in HTTPStatus if int(s) >= 200}


OPA_ENVOY_DEFAULT_RULE = "data.envoy.authz.allow"  # the plugin's default decision path


class _Invalid(ValueError):
    pass


def decision_from_envoy_result(result: Any, *, engine: str) -> Decision:
    if result is None:
        return Decision.deny(REASON_UNDEFINED, engine=engine, error="the decision rule is undefined")
    if isinstance(result, bool):
        if result:
            return Decision(allow=True, status=STATUS_OK, engine=engine, directives=HttpDirectives())
        return Decision(allow=False, reasons=(REASON_DEFAULT_DENY,), engine=engine, directives=HttpDirectives())
    if not isinstance(result, Mapping):
        return invalid_result(engine, f"expected a boolean or an object, got {type(result).__name__}")
    try:
        return _read(result, engine)
    except _Invalid as exc:
        return invalid_result(engine, str(exc))


def _read(result: Mapping[str, Any], engine: str) -> Decision:
    allowed = result.get("allowed")
    if "allowed" not in result:
        raise _Invalid('missing "allowed" key')
    if not isinstance(allowed, bool):
        raise _Invalid('"allowed" must be a boolean')
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise _Invalid('"body" must be a string')
    metadata = result.get("dynamic_metadata", {})
    if not isinstance(metadata, Mapping):
        raise _Invalid('"dynamic_metadata" must be an object')
    directives = HttpDirectives(
        headers=_headers(result.get("headers"), "headers"),
        response_headers_to_add=_headers(result.get("response_headers_to_add"), "response_headers_to_add"),
        request_headers_to_remove=_strings(result.get("request_headers_to_remove"), "request_headers_to_remove"),
        body=body,
        query_parameters_to_set=_headers(result.get("query_parameters_to_set"), "query_parameters_to_set"),
        query_parameters_to_remove=_strings(result.get("query_parameters_to_remove"), "query_parameters_to_remove"),
        dynamic_metadata=dict(metadata),
    )
    if allowed:
        return Decision(allow=True, status=STATUS_OK, engine=engine, directives=directives)
    return Decision(allow=False, reasons=(REASON_DEFAULT_DENY,), status=_status(result.get("http_status")),
                    engine=engine, directives=directives)


def _status(value: Any) -> int:
    if value is None:
        return STATUS_FORBIDDEN
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _Invalid('"http_status" must be an integer')
    if int(value) not in _VALID_STATUS:
        raise _Invalid(f"invalid HTTP status code {int(value)}")
    return int(value)


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, set | frozenset):  # a Rego set: give it a stable order
        value = sorted(value, key=str)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f'"{key}" must be an array of strings')
    return tuple(value)


def _headers(value: Any, key: str) -> tuple[tuple[str, str], ...]:
    """An object of string or string-list values, or a list of such objects."""
    if value is None:
        return ()
    objects = value if isinstance(value, list | tuple) else [value]
    out: list[tuple[str, str]] = []
    for obj in objects:
        if not isinstance(obj, Mapping):
            raise _Invalid(f'"{key}" must be an object or a list of objects')
        for name, v in obj.items():
            values = [v] if isinstance(v, str) else v
            if not isinstance(name, str) or not isinstance(values, list | tuple) or not all(
                    isinstance(x, str) for x in values):
                raise _Invalid(f'"{key}": value of {name!r} must be a string or an array of strings')
            out.extend((name, x) for x in values)
    return tuple(out)
