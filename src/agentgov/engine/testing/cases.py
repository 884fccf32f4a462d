"""YAML decision cases: one request, one expectation, run through every engine that has policies.

    cases:
      - name: analyst may query CRM in own tenant
        request: {subject: {...}, action: {...}, resource: {...}, arguments: {...}}
        engines: [rego, cedar]        # optional; default: every engine with policies
        data: {...}                   # optional; deep-merged over the policy data for this case
        expect: {allow: true, reasons: [tool_granted], status: 200, obligations: {redact: [], headers: {}}}

`reasons` lists reasons that must all be present; `obligations` keys given must match exactly.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.model import Decision
from agentgov.engine.policy.problems import PolicyLoadError, Problem, yaml_problem
from agentgov.engine.policy_input import InputError, normalize_input

_CASE_KEYS = {"name", "request", "expect", "engines", "data", "description"}
_EXPECT_KEYS = {"allow", "reasons", "status", "obligations"}
_FILE_KEYS = {"cases", "defaults", "rule", "input_format"}
INPUT_FORMATS = ("agentgov", "opa-envoy")


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    line: int
    request: dict[str, Any]
    expect: dict[str, Any]
    engines: tuple[str, ...] | None = None
    data: dict[str, Any] | None = None
    rule: str | None = None        # the file's `rule:` (else the command's --rule)
    input_format: str = "agentgov"  # the file's `input_format:` (else the command's --input-format)


@dataclass
class CaseOutcome:
    case: Case
    engine: str
    decision: Decision
    mismatches: list[str] = field(default_factory=list)
    diff: str = ""
    elapsed_s: float = 0.0


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records each mapping's line, so case errors point at the case."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping: dict[str, Any] = {str(k): v for k, v in loader.construct_mapping(node, deep=True).items()}
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def load_cases(path: Path, known_engines: tuple[str, ...], input_format: str = "agentgov") -> list[Case]:
    """A case file's cases. File-level `rule:` and `input_format:` apply to all its cases; with
    `input_format: opa-envoy` each request is an OPA-Envoy input (`attributes`, `parsed_body`…),
    decided by Rego only and read as the OPA-Envoy plugin reads a result."""
    file = str(path)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyLoadError([yaml_problem(file, exc, "case_error")]) from None
    problems: list[Problem] = []
    raw_cases = doc.get("cases") if isinstance(doc, dict) else None
    if not isinstance(raw_cases, list):
        raise PolicyLoadError([Problem(file, 1, 1, "`cases` must be a list", "case_error")])
    unknown = sorted(set(doc) - _FILE_KEYS - {"__line__"})
    if unknown:
        raise PolicyLoadError([Problem(file, 1, 1, f"unknown case-file key(s): {', '.join(unknown)}", "case_error")])
    rule = doc.get("rule")
    if rule is not None and not (isinstance(rule, str) and rule.startswith("data.")):
        raise PolicyLoadError([Problem(file, 1, 1, "`rule` must be a Rego rule path like data.envoy.authz.allow",
                                       "case_error")])
    input_format = doc.get("input_format", input_format)
    if input_format not in INPUT_FORMATS:
        raise PolicyLoadError([Problem(file, 1, 1, f"`input_format` must be one of {list(INPUT_FORMATS)}",
                                       "case_error")])
    defaults = _strip_lines((doc.get("defaults") or {}).get("request", {}))
    cases: list[Case] = []
    names: set[str] = set()
    for raw in raw_cases:
        line = raw.get("__line__", 1) if isinstance(raw, dict) else 1
        try:
            case = _parse_case(raw, file, line, defaults, known_engines, names, input_format)
            cases.append(replace(case, rule=rule, input_format=input_format))
        except ValueError as exc:
            problems.append(Problem(file, line, 1, str(exc), "case_error"))
    if problems:
        raise PolicyLoadError(problems)
    return cases


def _parse_case(raw: Any, file: str, line: int, defaults: dict[str, Any], known_engines: tuple[str, ...],
                names: set[str], input_format: str = "agentgov") -> Case:
    if not isinstance(raw, dict):
        raise ValueError("each case must be a mapping")
    raw = _strip_lines(raw)
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise ValueError(f"unknown case key(s): {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("case needs a non-empty `name`")
    if name in names:
        raise ValueError(f"duplicate case name {name!r}")
    names.add(name)
    expect = raw.get("expect")
    if not isinstance(expect, dict):
        raise ValueError(f"case {name!r}: `expect` must be a mapping with at least `allow`")
    if set(expect) - _EXPECT_KEYS:  # a typo (`alow`) is named before the missing key it stands for
        raise ValueError(f"case {name!r}: unknown expect key(s): {', '.join(sorted(set(expect) - _EXPECT_KEYS))} "
                         f"(known: {', '.join(sorted(_EXPECT_KEYS))})")
    if "allow" not in expect:
        raise ValueError(f"case {name!r}: `expect` must be a mapping with at least `allow`")
    engines = raw.get("engines")
    if engines is not None:
        if not isinstance(engines, list) or not engines or set(engines) - set(known_engines):
            raise ValueError(f"case {name!r}: `engines` must be a non-empty subset of {list(known_engines)}")
        engines = tuple(engines)
    if input_format == "opa-envoy":
        if engines is not None and engines != ("rego",):
            raise ValueError(f"case {name!r}: OPA-Envoy inputs are decided by Rego only")
        engines = ("rego",)
        request = deep_merge(defaults, raw.get("request") or {})
    else:
        try:
            request = normalize_input(deep_merge(defaults, raw.get("request") or {}))
        except InputError as exc:
            raise ValueError(f"case {name!r}: {exc}") from None
    data = raw.get("data")
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"case {name!r}: `data` must be a mapping")
    return Case(name, file, line, request, expect, engines, data)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on a copy of `base`: the result shares nothing with either (a case's request)."""
    return overlay(copy.deepcopy(dict(base)), over)


def overlay(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base` for a case's data, sharing every subtree of `base` it does not touch.
    The policy data can be large (a catalog of 20,000 tools) and a case overrides a few keys: a deep
    copy per case was most of `agentgov test`'s time there. Neither input is changed, and the result
    is only read (serialized into the engines)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def compare(expect: Mapping[str, Any], decision: Decision) -> list[str]:
    """Human-readable mismatches between an expectation and a decision (empty when it matches)."""
    actual = decision.to_dict()
    problems: list[str] = []
    j = _json
    if expect["allow"] != actual["allow"]:
        problems.append(f"allow: expected {j(expect['allow'])}, got {j(actual['allow'])} "
                        f"(reasons {j(actual['reasons'])}, status {actual['status']})")
    if "reasons" in expect:
        missing = [r for r in expect["reasons"] if r not in actual["reasons"]]
        if missing:
            problems.append(f"reasons: missing {j(missing)}, got {j(actual['reasons'])}")
    if "status" in expect and expect["status"] != actual["status"]:
        problems.append(f"status: expected {expect['status']}, got {actual['status']}")
    for key, want in (expect.get("obligations") or {}).items():
        got = actual["obligations"].get(key)
        if key == "redact":
            want = sorted(want)
        if want != got:
            problems.append(f"obligations.{key}: expected {j(want)}, got {j(got)}")
    return problems


def _json(value: Any) -> str:
    """Values as a policy author wrote them (true, ["a"]), not as Python prints them (True, ['a'])."""
    return json.dumps(value, sort_keys=True, default=str)


def render_diff(expect: Mapping[str, Any], decision: Decision) -> str:
    """A unified diff of expected vs actual, over the keys the case names."""
    actual = decision.to_dict()
    shown = {k: actual[k] for k in expect if k in actual}
    if "obligations" in expect:
        shown["obligations"] = {k: actual["obligations"].get(k) for k in expect["obligations"]}
    if decision.errors:
        shown["errors"] = list(decision.errors)
    want = json.dumps(expect, indent=2, sort_keys=True).splitlines()
    got = json.dumps(shown, indent=2, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))


class CaseRunner:
    """Runs cases against backends, building extra backends for cases that override data."""

    def __init__(self, backends: dict[str, DecisionBackend], build: Any) -> None:
        self._backends = backends
        self._build = build  # callable(data) -> dict[str, DecisionBackend]
        self._overrides: dict[str, dict[str, DecisionBackend]] = {}

    def _backend_for(self, case: Case, engine: str, base_data: Mapping[str, Any]) -> DecisionBackend:
        if case.data is None:
            return self._backends[engine]
        key = json.dumps(case.data, sort_keys=True)
        if key not in self._overrides:
            self._overrides[key] = self._build(overlay(base_data, case.data))
        return self._overrides[key][engine]

    def override_backends(self) -> list[dict[str, DecisionBackend]]:
        return list(self._overrides.values())

    async def run(self, cases: list[Case], base_data: Mapping[str, Any],
                  pattern: re.Pattern[str] | None) -> list[CaseOutcome]:
        outcomes: list[CaseOutcome] = []
        for case in cases:
            if pattern is not None and not pattern.search(case.name):
                continue
            for engine in case.engines or tuple(self._backends):
                if engine not in self._backends:
                    continue
                backend = self._backend_for(case, engine, base_data)
                started = time.perf_counter()
                decision = await backend.evaluate(case.request)
                elapsed = time.perf_counter() - started
                mismatches = compare(case.expect, decision)
                diff = render_diff(case.expect, decision) if mismatches else ""
                outcomes.append(CaseOutcome(case, engine, decision, mismatches, diff, elapsed))
        return outcomes
