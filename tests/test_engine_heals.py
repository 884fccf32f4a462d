"""One bad input costs one decision: after a regorus panic the engine is rebuilt from the loaded
policies, and workers never capture a Rust backtrace on the hot path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgov.cli.stack import LocalStack
from agentgov.engine.backends.rego import RegoBackend
from tests.http_helpers import bearer, send

PANICKY = """package agentgov

import rego.v1

default decision := {"allow": false, "reasons": ["default_deny"], "status": 403}

# strings.count panics inside regorus when the separator is empty (real OPA returns an error instead).
decision := {"allow": true, "reasons": ["counted"], "status": 200, "obligations": {"redact": [], "headers": {}}} if {
	input.subject.authenticated
	strings.count(input.arguments.q, input.arguments.sep) >= 0
}
"""


def doc(sep: str) -> dict[str, object]:
    return {"subject": {"id": "a", "roles": [], "tenant": None, "claims": {}, "authenticated": True},
            "action": {"kind": "tool.call", "name": "t"}, "resource": {"type": "tool", "id": "t", "server": None},
            "arguments": {"q": "abc", "sep": sep}, "pii": {"findings": [], "types": [], "secrets": []},
            "budget": {}, "context": {}, "http": {}}


@pytest.mark.reliability
def test_the_next_decision_after_a_panic_is_normal() -> None:
    backend = RegoBackend([("p.rego", PANICKY)])
    first = asyncio.run(backend.evaluate(doc("")))
    assert (first.allow, first.reasons) == (False, ("engine_error",))
    assert "window size must be non-zero" in first.errors[0]
    for _ in range(3):  # not once: every later decision is whole again
        again = asyncio.run(backend.evaluate(doc("b")))
        assert (again.allow, again.reasons) == (True, ("counted",))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.mktemp("panicky")
    (folder / "p.rego").write_text(PANICKY)
    s = LocalStack(policies=folder, env_extra={"RUST_BACKTRACE": "1"})
    with s:
        yield s


@pytest.mark.envoy
@pytest.mark.reliability
def test_through_envoy_a_panic_denies_one_request_and_the_worker_carries_on(stack: LocalStack) -> None:
    token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "arguments": {"q": "abc"}}}
    bad = {**call, "params": {"name": "t", "arguments": {"q": "abc", "sep": ""}}}
    good = {**call, "params": {"name": "t", "arguments": {"q": "abc", "sep": "b"}}}
    status, _, body = send(stack, "/mcp", bad, token)
    assert (status, body["reasons"]) == (403, ["engine_error"])
    assert "window size" not in str(body)  # engine text stays in the log
    for _ in range(3):
        assert send(stack, "/mcp", good, token)[0] == 200
    assert "stack backtrace:" not in stack.log("agentgov")  # RUST_BACKTRACE=1 in the environment, yet none


def test_coverage_survives_a_heal(tmp_path: Path) -> None:
    backend = RegoBackend([("p.rego", PANICKY)])
    backend.enable_coverage()
    asyncio.run(backend.evaluate(doc("")))
    asyncio.run(backend.evaluate(doc("b")))
    assert backend.coverage_report()  # still collecting after the engine was rebuilt
