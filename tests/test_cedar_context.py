"""The Cedar context cut down to what the policies can read: the same answers as the whole context
(property-tested against cedarpy itself), the attributes a policy names still reach it, and the
per-caller entity handles are keyed by everything that can change an answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgov.engine.backends import cedar
from agentgov.engine.backends.cedar import CedarBackend
from agentgov.engine.backends.cedar_context import WHOLE, context_use, project
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.policy_input import normalize_input
from tests.conftest import POLICIES


def test_the_shipped_policies_read_only_named_attributes() -> None:
    use = context_use((POLICIES / "cedar" / "agentgov.cedar").read_text())
    assert use != WHOLE
    assert isinstance(use, dict)
    assert use["arguments"] == {"tenant_id": True, "max_tokens": True, "amount_usd": True}
    assert use["pii"] == {"types": True, "secrets": True}
    assert "http" not in use
    assert "source_ip" not in use


@pytest.mark.parametrize(("policy", "expected"), [
    ("permit (principal, action, resource) when { context.a.b == 1 };", {"a": {"b": True}}),
    # Cedar reads `has a.b` as `has a && a has b`: `a` is kept whole (more than needed, never less).
    ("permit (principal, action, resource) when { context has a.b };", {"a": True}),
    ("permit (principal, action, resource) when { context.a has b && context.a.c.d };",
     {"a": {"b": True, "c": {"d": True}}}),
    ("permit (principal, action, resource) when { context.a.b && context.a == {} };", {"a": True}),
    ('permit (principal, action, resource) when { context["a b"].c like "x*" };', {"a b": {"c": True}}),
    ("permit (principal, action, resource) when { (if context.q then context.r else {}).s };",
     {"q": True, "r": True}),
    ("permit (principal, action, resource) when { [context.y].contains(1) && ip(context.ip).isLoopback() };",
     {"y": True, "ip": True}),
    ("permit (principal, action, resource) when { context == {} };", WHOLE),
    ("permit (principal, action, resource) when { {c: context}.c.a };", WHOLE),
    ("permit (principal, action, resource) when { principal.x };", {}),
    ("permit (principal, action, resource) when { ", WHOLE),  # unreadable: the whole context, never less
])
def test_context_use_keeps_every_path_a_policy_can_reach(policy: str, expected: Any) -> None:
    assert context_use(policy) == expected


def test_projection_leaves_absent_attributes_absent_and_non_records_whole() -> None:
    value = {"a": {"b": 1, "z": 2}, "s": "text", "drop": [1, 2]}
    assert project(value, {"a": {"b": True, "missing": True}, "s": {"x": True}, "nowhere": True}) == \
        {"a": {"b": 1}, "s": "text"}
    assert project(value, WHOLE) is value


# Policies that read the context in every way Cedar allows: paths, `has`, whole records, sets.
POLICY_SET = """
@id("p1") permit (principal, action, resource) when { context.a.b == 1 };
@id("p2") permit (principal, action, resource) when { context has c && context.c.d has e };
@id("p3") forbid (principal, action, resource) when { context.f == {"g": 1} };
@id("p4") permit (principal, action, resource) when { context.h.contains("x") };
@id("p5") forbid (principal, action, resource) when { context.a has k && context.a.k > 3 };
@id("p6") permit (principal, action, resource) when { context.c.d.e like "y*" };
@id("p7") forbid (principal, action, resource) when { context has m || context.a has n };
"""
keys = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "k", "m", "n", "z"])
leaves = st.one_of(st.integers(-5, 5), st.sampled_from(["x", "yes", "y", ""]), st.booleans())
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_a_projected_context_gets_the_same_answer_as_the_whole_one(context: dict[str, Any]) -> None:
    policies = cedarpy.PolicySet.from_str(POLICY_SET)
    use = context_use(POLICY_SET)
    assert use != WHOLE

    def answer(ctx: dict[str, Any]) -> tuple[bool, list[str], int]:
        request = {"principal": {"type": "User", "id": "u"}, "action": {"type": "Action", "id": "a"},
                   "resource": {"type": "Tool", "id": "t"}, "context": ctx}
        result = cedarpy.is_authorized(request, policies, "[]")
        return result.allowed, sorted(result.diagnostics.reasons), len(result.diagnostics.errors)

    assert answer(project(context, use)) == answer(context)


def _call(policy: str, roles: list[str], **context: Any) -> Any:
    backend = CedarBackend([("p.cedar", policy)])
    return backend, normalize_input({"subject": {"id": "u", "roles": roles, "authenticated": True},
                                     "action": {"kind": "tool.call", "name": "t"},
                                     "resource": {"type": "tool", "id": "t"}, **context})


def test_attributes_a_policy_names_still_reach_it() -> None:
    policy = ('@id("from_office")\npermit (principal, action, resource) '
              'when { context.source_ip == "10.0.0.1" && context.http.path == "/mcp" };\n')
    backend, allowed = _call(policy, [], context={"source_ip": "10.0.0.1"}, http={"path": "/mcp"})
    assert asyncio.run(backend.evaluate(allowed)).allow
    _, elsewhere = _call(policy, [], context={"source_ip": "10.0.0.2"}, http={"path": "/mcp"})
    assert not asyncio.run(backend.evaluate(elsewhere)).allow


def test_the_principal_cache_is_keyed_by_the_whole_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cedar, "PRINCIPAL_CACHE", 4)
    policy = '@id("role")\npermit (principal, action, resource) when { principal.roles.contains("analyst") };\n'
    backend, analyst = _call(policy, ["analyst"])
    _, other = _call(policy, ["contractor"])  # the same subject id, other roles: another principal entity
    for _ in range(2):
        assert asyncio.run(backend.evaluate(analyst)).allow
        assert not asyncio.run(backend.evaluate(other)).allow
    for i in range(10):
        asyncio.run(backend.evaluate({**analyst, "subject": {**analyst["subject"], "id": f"u{i}"}}))
    assert len(backend._with_principal) == 4
    assert json.loads(next(reversed(backend._with_principal))[1])[0]["uid"]["id"] == "u9"


def test_every_catalog_entry_is_checked_against_the_schema_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad entry anywhere in the catalog, past the first chunk too, is a load error naming why."""
    monkeypatch.setattr(cedar, "VALIDATE_CHUNK", 3)
    schema = ("agentgov.cedarschema", (POLICIES / "cedar" / "agentgov.cedarschema").read_text())
    policy = [("p.cedar", '@id("all")\npermit (principal, action, resource);\n')]
    tools = {f"t{i}": {"roles": ["analyst"], "classification": "internal"} for i in range(10)}
    CedarBackend(policy, schema, {"agentgov": {"catalog": {"tool": tools}}})
    tools["t8"] = {"roles": 5, "classification": "internal"}
    with pytest.raises(PolicyLoadError) as raised:
        CedarBackend(policy, schema, {"agentgov": {"catalog": {"tool": tools}}})
    problem = raised.value.problems[0]
    assert problem.code == "cedar_schema_error"
    assert "catalog entities do not match the Cedar schema" in problem.message
    assert "t8" in problem.message
