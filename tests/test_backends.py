"""Decision backends and the result reader: fail-closed behaviour, property-based."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import cedarpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgov.engine.backends.base import decision_from_document
from agentgov.engine.backends.cedar import CedarBackend
from agentgov.engine.backends.cedar_mapping import to_cedar
from agentgov.engine.backends.rego import RegoBackend
from agentgov.engine.policy.cedar_source import split_statements
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.policy_input import InputError, normalize_input

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_result_reader_never_raises_and_never_allows_garbage(value: Any) -> None:
    decision = decision_from_document(value, engine="t")
    if decision.allow:
        assert value is True or (isinstance(value, dict) and value.get("allow") is True)
    else:
        assert decision.reasons, "a deny always says why"
        assert decision.status >= 400


@given(st.dictionaries(st.sampled_from(["reasons", "status", "obligations", "x"]), json_values, max_size=4))
def test_result_reader_allow_requires_valid_fields(extra: dict[str, Any]) -> None:
    decision = decision_from_document({"allow": True, **extra}, engine="t")
    if decision.allow:
        assert all(isinstance(r, str) for r in decision.reasons)
        assert decision.status == 200


@pytest.mark.parametrize(("doc", "reason"), [
    (None, "decision_undefined"),
    ({"allow": "yes"}, "invalid_decision"),
    ({"allow": True, "obligations": {"encrypt": True}}, "invalid_decision"),
    ({"allow": False, "status": 200}, "invalid_decision"),
    ({"allow": True, "obligations": {"headers": {"a": 1}}}, "invalid_decision"),
    ({"allow": False}, "default_deny"),
    (False, "default_deny"),
])
def test_result_reader_denies(doc: Any, reason: str) -> None:
    decision = decision_from_document(doc, engine="t")
    assert not decision.allow
    assert decision.reasons == (reason,)


def test_result_reader_accepts_rego_sets() -> None:
    decision = decision_from_document({"allow": False, "reasons": {"b", "a"}, "status": 429}, engine="t")
    assert decision.reasons == ("a", "b")
    assert decision.status == 429


@given(json_values)
def test_cedar_value_conversion_is_total_and_cedar_typed(value: Any) -> None:
    def check(v: Any) -> None:
        assert v is not None
        assert not isinstance(v, float)
        if isinstance(v, int) and not isinstance(v, bool):
            assert -(2**63) <= v < 2**63
        if isinstance(v, dict) and "__extn" not in v:
            for item in v.values():
                check(item)
        if isinstance(v, list):
            for item in v:
                check(item)

    converted = to_cedar(value)
    if converted is not None:
        check(converted)
        json.dumps(converted)


def test_cedar_decimal_encoding() -> None:
    assert to_cedar(0.7) == {"__extn": {"fn": "decimal", "arg": "0.7000"}}
    assert to_cedar(2**70) == str(2**70)
    assert to_cedar(float("inf")) == "inf"
    assert to_cedar({"a": None, "b": [1, None]}) == {"b": [1]}


policy_texts = st.lists(
    st.tuples(st.sampled_from(["permit", "forbid"]), st.text(alphabet="ab;/\\\"\n x", max_size=12)),
    min_size=1, max_size=5,
)


@given(policy_texts)
def test_statement_splitter_counts_policies(policies: list[tuple[str, str]]) -> None:
    source = ""
    for effect, s in policies:
        escaped = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        source += f'// c;"\n{effect} (principal, action, resource)\nwhen {{ context.s == "{escaped}" }};\n'
    statements = split_statements("f.cedar", source)
    assert len(statements) == len(policies)
    for stmt, (effect, _) in zip(statements, policies, strict=True):
        assert stmt.text.startswith(effect)
        assert source.splitlines()[stmt.line - 1].startswith(effect)


def test_cedar_runtime_error_is_a_deny_not_a_skipped_forbid() -> None:
    backend = CedarBackend([("p.cedar",
                             '@id("all")\npermit (principal, action, resource);\n'
                             '@id("guard")\nforbid (principal, action, resource) when { principal.missing };\n')])
    policy_input = normalize_input({"action": {"kind": "tool.call"}, "resource": {"type": "tool", "id": "x"}})
    decision = asyncio.run(backend.evaluate(policy_input))
    assert not decision.allow
    assert decision.reasons == ("engine_error",)
    assert "missing" in decision.errors[0]


def test_cedar_obligation_policy_never_grants() -> None:
    backend = CedarBackend([("p.cedar", '@id("o")\n@obligation("redact")\npermit (principal, action, resource);\n')])
    policy_input = normalize_input({"action": {"kind": "tool.call"}, "resource": {"type": "tool", "id": "x"}})
    decision = asyncio.run(backend.evaluate(policy_input))
    assert not decision.allow
    assert decision.reasons == ("default_deny",)


ONE_SET = ('@id("all")\npermit (principal, action, resource);\n'
           '@id("no_x")\n@status("429")\nforbid (principal, action, resource == Tool::\"x\");\n'
           '@id("mark")\n@obligation("header:x-reviewed=yes")\npermit (principal, action, resource);\n'
           '@id("shaky")\n@obligation("redact")\npermit (principal, action, resource) when { context.missing };\n')


def _cedar_call(tool: str) -> dict[str, Any]:
    return normalize_input({"action": {"kind": "tool.call"}, "resource": {"type": "tool", "id": tool}})


def test_cedar_asks_once_per_decision_and_reads_obligations_from_the_same_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = CedarBackend([("p.cedar", ONE_SET.replace(' when { context.missing }', ''))])
    calls = 0
    real = cedarpy.is_authorized

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(cedarpy, "is_authorized", counting)
    allowed = asyncio.run(backend.evaluate(_cedar_call("y")))
    assert (allowed.allow, allowed.reasons) == (True, ("all",))  # obligations are not reasons
    assert allowed.obligations.headers == {"x-reviewed": "yes"}
    denied = asyncio.run(backend.evaluate(_cedar_call("x")))
    assert (denied.allow, denied.reasons, denied.status) == (False, ("no_x",), 429)
    assert denied.obligations.headers == {}
    assert calls == 2


def test_a_cedar_obligation_that_errors_refuses_an_allow_but_not_a_deny() -> None:
    backend = CedarBackend([("p.cedar", ONE_SET)])
    allowed = asyncio.run(backend.evaluate(_cedar_call("y")))
    assert (allowed.allow, allowed.reasons) == (False, ("engine_error",))
    assert "obligation policy error" in allowed.errors[0]
    denied = asyncio.run(backend.evaluate(_cedar_call("x")))  # the forbid decides; the obligation never mattered
    assert (denied.allow, denied.reasons, denied.status) == (False, ("no_x",), 429)


def test_cedar_bad_obligation_annotation_is_a_load_error() -> None:
    with pytest.raises(PolicyLoadError, match=r"p.cedar:1:1: @obligation\(\"encrypt\"\)"):
        CedarBackend([("p.cedar", '@obligation("encrypt")\npermit (principal, action, resource);\n')])


def test_rego_backend_undefined_and_type_errors_deny() -> None:
    backend = RegoBackend([("p.rego", "package agentgov\nimport rego.v1\n"
                            "decision := {\"allow\": true, \"reasons\": []} if input.arguments.n + 1 > 0\n")])
    undefined = asyncio.run(backend.evaluate(normalize_input({"action": {"kind": "http"},
                                                               "resource": {"type": "route", "id": "/"}})))
    assert not undefined.allow
    assert undefined.reasons == ("decision_undefined",)
    type_error = asyncio.run(backend.evaluate(normalize_input({
        "action": {"kind": "http"}, "resource": {"type": "route", "id": "/"}, "arguments": {"n": "x"}})))
    assert not type_error.allow


def test_normalize_input_rejects_bad_documents() -> None:
    with pytest.raises(InputError, match="must be a JSON object"):
        normalize_input([])
    with pytest.raises(InputError, match="invalid policy input at action/kind"):
        normalize_input({"action": {"kind": "teleport"}, "resource": {"type": "tool", "id": "x"}})
    doc = normalize_input({"action": {"kind": "tool.call"}, "resource": {"type": "tool", "id": "x"},
                           "pii": {"findings": [{"type": "EMAIL", "count": 1, "path": "a"},
                                                {"type": "AWS_KEY", "count": 1, "path": "b", "category": "secret"}]}})
    assert doc["pii"]["types"] == ["EMAIL"]
    assert doc["pii"]["secrets"] == ["AWS_KEY"]


def _catalog_backend(policy: str) -> CedarBackend:
    catalog = {"tool": {"t1": {"classification": "internal"},
                        "t2": {"classification": "public", "owner": {"__entity": {"type": "Team", "id": "ops"}}},
                        "ref.tool": {"classification": "public"},
                        **{f"bulk{i}": {"classification": "internal"} for i in range(300)}},
               "team": {"ops": {"oncall": True}}}
    return CedarBackend([("p.cedar", policy)], data={"agentgov": {"catalog": catalog}})


def _decide(backend: CedarBackend, resource: str, arguments: dict[str, Any] | None = None) -> bool:
    return asyncio.run(backend.evaluate(normalize_input({
        "action": {"kind": "tool.call", "name": resource}, "resource": {"type": "tool", "id": resource},
        "arguments": arguments or {}}))).allow


def test_cedar_reaches_every_catalog_entity_a_policy_can_name() -> None:
    """A decision sees only the catalog entities it can reach (so its cost does not grow with the
    catalog), and those are all of them: the resource, entities named in the policy text, entity
    references in the context, and entities referenced from those entities' attributes."""
    literal = _catalog_backend('@id("lit")\npermit (principal, action, resource) '
                               'when { Tool::"ref.tool".classification == "public" };\n')
    assert _decide(literal, "t1")  # named in the policy: in every request's slice
    assert _decide(literal, "unknown.tool")
    own = _catalog_backend('@id("own")\npermit (principal, action, resource) '
                           'when { resource has classification && resource.classification == "public" };\n')
    assert _decide(own, "t2")
    assert not _decide(own, "t1")
    assert not _decide(own, "unknown.tool")
    chained = _catalog_backend('@id("chain")\npermit (principal, action, resource) '
                               'when { resource has owner && resource.owner.oncall };\n')
    assert _decide(chained, "t2")  # Team::"ops" reached through t2's attribute



@pytest.mark.parametrize("escape", [{"__entity": {"type": "Tool", "id": "t2"}},
                                    {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}, [{"__expr": "1"}]])
def test_cedar_refuses_arguments_it_would_read_as_entities_or_extensions(escape: Any) -> None:
    """A caller's `{"__entity": …}` is a plain object to Rego and the backend but an entity reference
    to Cedar's JSON: refused with the reason, never evaluated."""
    backend = _catalog_backend('@id("all")\npermit (principal, action, resource);\n')
    decision = asyncio.run(backend.evaluate(normalize_input({
        "action": {"kind": "tool.call", "name": "t1"}, "resource": {"type": "tool", "id": "t1"},
        "arguments": {"target": escape}})))
    assert not decision.allow
    assert decision.reasons == ("engine_error",)
    assert "Cedar would read" in decision.errors[0]


def test_cedar_keeps_a_bounded_number_of_catalog_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgov.engine.backends import cedar

    monkeypatch.setattr(cedar, "SLICE_CACHE", 8)
    backend = _catalog_backend('@id("all")\npermit (principal, action, resource);\n')
    for i in range(50):
        assert _decide(backend, f"bulk{i}")
    assert len(backend._slices) == 8
