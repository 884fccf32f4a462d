"""OPA-Envoy compatibility mode: the plugin's input shape and result shapes, so existing OPA-Envoy
policies run unchanged. The first two policies are verbatim from the OPA-Envoy documentation
("Policy Primer via Examples", parsed_query and parsed_body); the third uses every result field."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from agentgov.cli.stack import LocalStack
from agentgov.engine.backends.envoy_result import decision_from_envoy_result
from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.opa_envoy import opa_envoy_input, parse_path
from tests.http_helpers import bearer, post, request

DOCS_PARSED_QUERY = """package envoy.authz

import rego.v1

default allow := false

allow if {
\tinput.parsed_path == ["people"]
\tinput.parsed_query.lang == ["en"]
\tinput.parsed_query.id == ["1", "2"]
}
"""

DOCS_PARSED_BODY = """package envoy.authz

import rego.v1

default allow := false

allow if {
\tinput.parsed_body.firstname == "Charlie"
\tinput.parsed_body.lastname == "Opa"
}
"""

RESULT_POLICY = """package envoy.authz

import rego.v1

import input.attributes.request.http

default allow := false

allow if {
\tinput.parsed_path[0] == "people"
\thttp.headers["x-user"] == "alice"
}

headers["x-ext-auth-allow"] := "yes"

headers["x-validated-by"] := ["security-checkpoint", "second-pass"]

request_headers_to_remove := ["one-auth-header"]

response_headers_to_add["x-foo"] := "bar"

status_code := 200 if {
\tallow
} else := 401 if {
\tnot http.headers["x-user"]
} else := 403

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

result["allowed"] := allow
result["headers"] := headers
result["response_headers_to_add"] := response_headers_to_add
result["request_headers_to_remove"] := request_headers_to_remove
result["body"] := body
result["http_status"] := status_code
result["query_parameters_to_set"] := {"checked": "yes"}
result["query_parameters_to_remove"] := ["debug"]
result["dynamic_metadata"] := {"checked_by": "agentgov"}
"""


def _stack(tmp_path: Path, policy: str, rule: str | None = None) -> LocalStack:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "envoy.rego").write_text(policy)
    return LocalStack(policies=folder, input_format="opa-envoy", rule=rule)


@pytest.fixture
def started() -> Iterator[list[LocalStack]]:
    stacks: list[LocalStack] = []
    yield stacks
    for s in stacks:
        s.stop()


@pytest.mark.envoy
def test_docs_parsed_query_policy_runs_unchanged(tmp_path: Path, started: list[LocalStack]) -> None:
    stack = _stack(tmp_path, DOCS_PARSED_QUERY)
    started.append(stack.start())
    token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    assert request(stack.url + "/people?lang=en&id=1&id=2", "GET", headers=token)[0] == 200
    assert request(stack.url + "/people?lang=fr&id=1&id=2", "GET", headers=token)[0] == 403
    assert request(stack.url + "/people/1?lang=en&id=1&id=2", "GET", headers=token)[0] == 403
    # agentgov's identity hook still runs first: no token, no policy evaluation.
    assert request(stack.url + "/people?lang=en&id=1&id=2", "GET")[0] == 401


@pytest.mark.envoy
def test_docs_parsed_body_policy_runs_unchanged(tmp_path: Path, started: list[LocalStack]) -> None:
    stack = _stack(tmp_path, DOCS_PARSED_BODY)
    started.append(stack.start())
    token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    assert request(stack.url + "/people", "POST", {"firstname": "Charlie", "lastname": "Opa"}, token)[0] == 200
    assert request(stack.url + "/people", "POST", {"firstname": "Mallory", "lastname": "Opa"}, token)[0] == 403
    status, _, body = post(stack.url + "/people", None, token, raw=b'{"firstname": ')
    assert (status, body["reasons"]) == (400, ["malformed_request"])


@pytest.mark.envoy
def test_structured_result_fields_reach_envoy(tmp_path: Path, started: list[LocalStack]) -> None:
    stack = _stack(tmp_path, RESULT_POLICY, rule="data.envoy.authz.result")
    started.append(stack.start())
    token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    status, headers, raw = request(stack.url + "/people/7?debug=1&keep=1", "GET",
                                   headers={**token, "x-user": "alice", "one-auth-header": "secret",
                                            "x-agentgov-subject": "mallory"})
    assert status == 200
    echoed = json.loads(raw)
    seen = echoed["headers"]
    assert seen["x-ext-auth-allow"] == "yes"
    assert seen["x-validated-by"] == "security-checkpoint,second-pass"
    assert "one-auth-header" not in seen
    assert seen["x-agentgov-subject"] == "alice"  # identity headers still overwrite in compat mode
    assert sorted(echoed["query"].split("&")) == ["checked=yes", "keep=1"]
    assert headers["x-foo"] == "bar"
    # Denied: the policy's status, body and headers, verbatim.
    status, headers, raw = request(stack.url + "/people/7", "GET", headers={**token, "x-user": "bob"})
    assert (status, raw) == (403, b"Unauthorized Request")
    assert headers["x-ext-auth-allow"] == "yes"
    status, _, raw = request(stack.url + "/people/7", "GET", headers=token)
    assert (status, raw) == (401, b"Authentication Failed")


def test_input_shape_matches_the_plugin() -> None:
    doc = opa_envoy_input(method="POST", path="/people/a%20b?lang=en&id=1&id=2", host="h",
                          headers={"content-type": "application/json", "content-length": "24"},
                          body=b'{"firstname": "Charlie"}', body_truncated=False)
    assert (doc["parsed_body"], doc["truncated_body"]) == ({"firstname": "Charlie"}, False)
    assert doc["parsed_path"] == ["people", "a b"]
    assert doc["parsed_query"] == {"lang": ["en"], "id": ["1", "2"]}
    assert doc["version"] == {"ext_authz": "v3", "encoding": "protojson"}
    assert doc["attributes"]["request"]["http"]["method"] == "POST"
    assert parse_path("/") == ([""], {})
    # Envoy's own attributes are kept as they came; the packed body is also offered as text.
    attrs = {"request": {"http": {"method": "GET", "rawBody": "eyJhIjogMX0="}}, "metadataContext": {}}
    doc = opa_envoy_input(method="GET", path="/x", host="h", headers={"content-type": "application/json"},
                          body=b"", body_truncated=False, attributes=attrs)
    assert doc["parsed_body"] == {"a": 1}
    assert doc["attributes"]["request"]["http"]["body"] == '{"a": 1}'
    assert "body" not in attrs["request"]["http"]  # the caller's document is not modified


@pytest.mark.parametrize(("headers", "body", "flagged"), [
    ({"content-type": "application/json", "content-length": "100"}, b'{"a": 1}', False),
    ({"content-type": "application/json"}, b'{"a": 1}', True),
])
def test_truncated_body_is_flagged_not_parsed(headers: dict[str, str], body: bytes, flagged: bool) -> None:
    doc = opa_envoy_input(method="POST", path="/", host="h", headers=headers, body=body, body_truncated=flagged)
    assert (doc["parsed_body"], doc["truncated_body"]) == (None, True)


def test_non_json_body_is_not_parsed_and_bad_json_is_an_error() -> None:
    doc = opa_envoy_input(method="POST", path="/", host="h", headers={"content-type": "text/plain"},
                          body=b"{not json", body_truncated=False)
    assert doc["parsed_body"] is None
    with pytest.raises(ProtocolError):
        opa_envoy_input(method="POST", path="/", host="h", headers={"content-type": "application/json"},
                        body=b"{not json", body_truncated=False)


@pytest.mark.parametrize(("result", "allow", "status", "error"), [
    (True, True, 200, None),
    (False, False, 403, None),
    (None, False, 403, "undefined"),
    ({"allowed": True, "headers": {"a": "b"}}, True, 200, None),
    ({"allowed": False, "http_status": 302, "headers": {"location": "/login"}}, False, 302, None),
    ({"headers": {}}, False, 403, "missing"),
    ({"allowed": "yes"}, False, 403, "boolean"),
    ({"allowed": False, "http_status": 999}, False, 403, "invalid HTTP status"),
    ({"allowed": False, "http_status": "403"}, False, 403, "integer"),
    ({"allowed": True, "headers": {"a": 1}}, False, 403, "string"),
    ({"allowed": True, "headers": "a"}, False, 403, "object"),
    ({"allowed": True, "request_headers_to_remove": "a"}, False, 403, "array of strings"),
    ({"allowed": True, "body": 7}, False, 403, "body"),
    ({"allowed": True, "dynamic_metadata": {"foo", "bar"}}, False, 403, "dynamic_metadata"),
    ([True], False, 403, "boolean or an object"),
])
def test_result_shapes(result: Any, allow: bool, status: int, error: str | None) -> None:
    decision = decision_from_envoy_result(result, engine="rego")
    assert (decision.allow, decision.status) == (allow, status)
    if error:
        assert error in decision.errors[0]
    else:
        assert decision.errors == ()


def test_header_lists_and_rego_sets_are_read() -> None:
    decision = decision_from_envoy_result({"allowed": True, "headers": [{"a": ["1", "2"]}, {"b": "3"}],
                                           "request_headers_to_remove": {"y", "x"}}, engine="rego")
    assert decision.directives is not None
    assert decision.directives.headers == (("a", "1"), ("a", "2"), ("b", "3"))
    assert decision.directives.request_headers_to_remove == ("x", "y")


def test_eval_cli_reads_opa_envoy_inputs(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "envoy.rego").write_text(DOCS_PARSED_QUERY)
    good, bad, listed = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "list.json"
    good.write_text(json.dumps({"parsed_path": ["people"], "parsed_query": {"lang": ["en"], "id": ["1", "2"]}}))
    bad.write_text(json.dumps({"parsed_path": ["people"], "parsed_query": {"lang": ["fr"]}}))
    listed.write_text("[1, 2]")
    policies = str(tmp_path / "p")
    allowed = run_cli("eval", policies, "--input", str(good), "--input-format", "opa-envoy")
    assert (allowed.exit_code, json.loads(allowed.output)["allow"]) == (0, True)
    denied = json.loads(run_cli("eval", policies, "--input", str(bad), "--input-format", "opa-envoy").output)
    assert (denied["allow"], denied["status"]) == (False, 403)
    not_object = run_cli("eval", policies, "--input", str(listed), "--input-format", "opa-envoy")
    assert (not_object.exit_code, "must be an object" in not_object.output) == (1, True)
    cedar = run_cli("eval", policies, "--input", str(good), "--input-format", "opa-envoy", "--engine", "cedar")
    assert (cedar.exit_code, "needs Rego" in cedar.output) == (1, True)
