"""regorus' compiled mode (Program + VM) decides as the interpreter does: every case of the shipped
library and generated inputs give identical decisions; policies it cannot compile stay interpreted."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.engine.backends.rego import RegoBackend
from agentgov.engine.model import Decision
from agentgov.engine.policy.discovery import discover
from agentgov.engine.testing.cases import deep_merge, load_cases
from tests.conftest import POLICIES

SOURCES = discover([POLICIES])
CATALOG = SOURCES.data["agentgov"]["catalog"]


def _pair(data: dict[str, Any] | None = None) -> tuple[RegoBackend, RegoBackend]:
    data = data if data is not None else SOURCES.data
    return RegoBackend(SOURCES.rego, data), RegoBackend(SOURCES.rego, data, compiled=False)


COMPILED, INTERPRETED = _pair()


def _decide(backend: RegoBackend, policy_input: dict[str, Any]) -> Decision:
    return asyncio.run(backend.evaluate(policy_input))


def test_the_shipped_library_runs_compiled() -> None:
    assert COMPILED.compiled
    assert not INTERPRETED.compiled


def test_every_library_case_decides_the_same_compiled_and_interpreted() -> None:
    cases = [c for f in sorted((POLICIES / "tests").glob("*.yaml")) for c in load_cases(f, ("rego", "cedar"))]
    assert len(cases) > 40
    for case in cases:
        compiled, interpreted = (COMPILED, INTERPRETED) if case.data is None else \
            _pair(deep_merge(SOURCES.data, case.data))
        assert _decide(compiled, case.request) == _decide(interpreted, case.request), case.name


_roles = st.lists(st.sampled_from(["analyst", "support", "admin", "developer", "auditor", "intern", ""]), max_size=3)
_tool = st.sampled_from([*sorted(CATALOG.get("tool", {})), "unknown.tool"])
_model = st.sampled_from([*sorted(CATALOG.get("model", {})), "unknown-model"])
_value = st.one_of(st.none(), st.booleans(), st.integers(-5, 100_000), st.text(max_size=12))


@st.composite
def _inputs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["tool.call", "llm.chat", "tool.list", "resource.read", "prompt.get", "http"]))
    name = draw(_model) if kind == "llm.chat" else draw(_tool)
    arguments: dict[str, Any] = draw(st.dictionaries(st.sampled_from(["tenant_id", "query", "max_tokens", "model",
                                                                      "stream"]), _value, max_size=4))
    if kind == "llm.chat":
        arguments["model"] = name
    return {
        "subject": {"id": draw(st.sampled_from(["alice", "bob", "anonymous"])), "roles": draw(_roles),
                    "tenant": draw(st.sampled_from(["acme", "globex", None])), "claims": {},
                    "authenticated": draw(st.booleans())},
        "action": {"kind": kind, "name": name},
        "resource": {"type": "model" if kind == "llm.chat" else "tool", "id": name},
        "arguments": arguments,
        "pii": {"findings": draw(st.lists(st.fixed_dictionaries({
            "type": st.sampled_from(["email", "credit_card", "aws_access_key", "private_key", "phone"]),
            "category": st.sampled_from(["pii", "secret"]), "count": st.integers(1, 3)}), max_size=2))},
        "context": {"time": "2026-11-30T12:00:00+00:00", "phase": draw(st.sampled_from(["request", "response"])),
                    **({"justification": "incident 42"} if draw(st.booleans()) else {})},
    }


@settings(max_examples=300, deadline=None)
@given(_inputs())
def test_generated_inputs_decide_the_same_compiled_and_interpreted(policy_input: dict[str, Any]) -> None:
    assert _decide(COMPILED, policy_input) == _decide(INTERPRETED, policy_input)


def test_what_the_vm_refuses_stays_interpreted_and_still_decides() -> None:
    source = "package agentgov\nimport rego.v1\nf := input.x\ndecision := {\"allow\": y == 3} if { y := f with input.x as 3 }\n"
    backend = RegoBackend([("p.rego", source)], {"k": 1})
    assert not backend.compiled
    assert _decide(backend, {"x": 1}).allow


def test_an_undefined_decision_is_a_deny_in_compiled_mode_too() -> None:
    backend = RegoBackend([("p.rego", "package agentgov\nimport rego.v1\ndecision := {\"allow\": true} if input.ok\n")])
    assert backend.compiled
    assert _decide(backend, {"ok": True}).allow
    denied = _decide(backend, {})
    assert (denied.allow, denied.reasons) == (False, ("decision_undefined",))


def test_rego_sets_in_results_read_the_same() -> None:
    source = ("package agentgov\nimport rego.v1\nreasons contains r if some r in input.r\n"
              "decision := {\"allow\": false, \"reasons\": reasons}\n")
    compiled, interpreted = RegoBackend([("p.rego", source)]), RegoBackend([("p.rego", source)], compiled=False)
    policy_input = {"r": ["b", "a", "b"]}
    assert _decide(compiled, policy_input) == _decide(interpreted, policy_input)
    assert _decide(compiled, policy_input).reasons == ("a", "b")
