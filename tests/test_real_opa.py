"""Real OPA is the reference for Rego: the shipped library compiles on OPA 1.20 (what `opa check`
does), its Rego unit tests and its decision cases pass there too, and what `agentgov check` refuses
because OPA would is really refused by OPA."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.policy.rego_check import check_modules
from agentgov.engine.testing.cases import CaseRunner, load_cases
from tests.conftest import POLICIES
from tests.opa_oracle import OpaError, RealOpaBackend, real_opa

SOURCES = discover([POLICIES])
_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]+)\b", re.MULTILINE)


def test_the_shipped_library_compiles_on_real_opa() -> None:
    engine = real_opa(SOURCES.rego + SOURCES.rego_tests, SOURCES.data)
    # Compilation happens on first use: any rego_recursion_error or rule/data conflict raises here.
    assert engine.eval_document("agentgov.decision", input={})["reasons"] == ["unauthenticated"]


def _rego_tests() -> list[tuple[str, str]]:
    return [(file, name) for file, source in SOURCES.rego_tests for name in _TEST_RULE.findall(source)]


@pytest.mark.parametrize(("file", "name"), _rego_tests(), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_rego_unit_tests_pass_on_real_opa(file: str, name: str) -> None:
    engine = real_opa(SOURCES.rego + SOURCES.rego_tests, SOURCES.data)
    package = re.search(r"^package\s+([\w.]+)", dict(SOURCES.rego_tests)[file], re.MULTILINE)
    assert package is not None
    assert engine.eval_query(f"data.{package.group(1)}.{name}") == [{}], f"{name} is not true on real OPA"


def test_every_decision_case_passes_on_real_opa() -> None:
    cases = [c for f in SOURCES.case_files for c in load_cases(f, ("rego", "cedar"))]
    cases = [c for c in cases if c.engines is None or "rego" in c.engines]

    def build(data: dict[str, object]) -> dict[str, RealOpaBackend]:
        return {"rego": RealOpaBackend(SOURCES.rego, data)}

    runner = CaseRunner(build(SOURCES.data), build)  # type: ignore[arg-type]
    outcomes = asyncio.run(runner.run(cases, SOURCES.data, None))
    failures = [f"{o.case.name}: {'; '.join(o.mismatches)}" for o in outcomes if o.mismatches]
    assert len(outcomes) == len(cases) > 40
    assert failures == []


@pytest.mark.parametrize(("source", "data", "opa_code"), [
    ('package agentgov\n\nimport rego.v1\n\ncatalog := object.get(data, ["agentgov", "catalog"], {})\n', {},
     "rego_recursion_error"),
    ("package agentgov\n\nimport rego.v1\n\nkeys := {k | data[k]}\n", {}, "rego_recursion_error"),
    ("package agentgov\n\nimport rego.v1\n\ncatalog := {}\n", {"agentgov": {"catalog": {"tool": {}}}}, "conflict"),
    ('package agentgov\n\nimport rego.v1\n\ndecision := {"allow": true} if { y == 1 }\n', {}, "unsafe"),
])
def test_what_agentgov_check_refuses_real_opa_refuses(source: str, data: dict[str, object], opa_code: str) -> None:
    assert check_modules([("p.rego", source)], data), "agentgov check accepted it"
    engine = real_opa([("p.rego", source)], data)
    with pytest.raises(OpaError) as err:
        engine.eval_query("data.agentgov")
    assert opa_code in str(err.value)


def test_the_embedded_engine_refuses_to_load_them_too() -> None:
    from agentgov.engine.backends.rego import RegoBackend

    with pytest.raises(PolicyLoadError):
        RegoBackend([("p.rego", 'package agentgov\n\nimport rego.v1\n\nc := object.get(data, ["x"], 1)\n')])


def test_cedar_names_the_same_session_methods_as_the_data() -> None:
    """Cedar cannot read data, so agentgov.cedar repeats the list: the two must not drift apart."""
    cedar = "\n".join(source for _, source in SOURCES.cedar)
    block = cedar[cedar.index('@id("session_allowed")'):]
    listed = re.findall(r'"([^"]+)"', block[block.index("||"):block.index("].contains")])
    assert listed == SOURCES.data["agentgov"]["session"]["methods"]


def test_a_decision_conflict_is_named_as_real_opa_names_it(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    """Two definitions of the decision that both match with different values: real OPA fails the
    evaluation (eval_conflict_error); agentgov denies with `decision_conflict`, naming the definitions,
    instead of calling it undefined and advising the `default` that is already there."""
    source = ('package agentgov\n\nimport rego.v1\n\ndefault decision := {"allow": false}\n\n'
              'decision := {"allow": true, "reasons": ["a"]} if input.subject.id == "alice"\n\n'
              'decision := {"allow": false, "reasons": ["b"]} if input.subject.tenant == "acme"\n')
    policy_input = {"subject": {"id": "alice", "roles": [], "tenant": "acme", "authenticated": True},
                    "action": {"kind": "tool.call", "name": "x"}, "resource": {"type": "tool", "id": "x"}}
    engine = real_opa([("p.rego", source)], {})
    with pytest.raises(OpaError, match="conflict"):
        engine.eval_document("agentgov.decision", input=policy_input)
    (tmp_path / "p.rego").write_text(source)
    (tmp_path / "in.json").write_text(json.dumps(policy_input))
    result = run_cli("eval", str(tmp_path / "p.rego"), "-i", str(tmp_path / "in.json"))
    doc = json.loads(result.output)
    assert doc["reasons"] == ["decision_conflict"]
    assert f"{tmp_path / 'p.rego'}:7" in doc["errors"][0]
    assert f"{tmp_path / 'p.rego'}:9" in doc["errors"][0]
