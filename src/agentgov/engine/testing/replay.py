"""Inputs to replay through two policy versions: decision cases, policy inputs, agentgov audit
logs and OPA decision logs, each with a stable id that an approvals file can name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgov.engine.hooks.audit.chain import CHECKPOINTS_SUFFIX
from agentgov.engine.policy.problems import PolicyLoadError, Problem
from agentgov.engine.policy.sources import DATA_FILES, is_case_file
from agentgov.engine.policy_input import InputError, normalize_input
from agentgov.engine.testing.cases import load_cases

ENGINE_NAMES = ("rego", "cedar")


@dataclass(frozen=True)
class ReplayInput:
    id: str            # "<file>#<case name>" or "<file>:<line>": what approvals name
    file: str
    line: int
    input: dict[str, Any]


@dataclass
class ReplaySet:
    inputs: list[ReplayInput]
    skipped: list[str]  # ids not replayed, with why


NOT_RECORDED = "(not recorded)"


def read_inputs(sources: list[Path]) -> ReplaySet:
    """Every replayable input under `sources` (files or folders). Unreadable input is an error,
    never silently dropped: a gate that replays less than it says proves less than it says."""
    found = ReplaySet([], [])
    problems: list[Problem] = []
    for source in sources:
        if not source.exists():
            problems.append(Problem(str(source), 0, 0, "no such file or directory", "input_error"))
            continue
        files = [source] if source.is_file() else sorted(
            p for p in source.rglob("*")
            if p.is_file() and p.name not in DATA_FILES and not p.name.endswith(".cedarschema.json")
            # An audit folder also holds each chain's signed checkpoints and lock: not decisions.
            and not p.name.endswith((CHECKPOINTS_SUFFIX, ".lock")))
        for path in files:
            try:
                _read(path, found, explicit=source.is_file())
            except PolicyLoadError as exc:
                problems.extend(exc.problems)
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(path), 0, 0, f"unreadable: {exc}", "input_error"))
    if problems:
        raise PolicyLoadError(problems)
    return found


def _read(path: Path, found: ReplaySet, *, explicit: bool) -> None:
    name = path.name
    if name.endswith((".yaml", ".yml")):
        problems: list[Problem] = []
        if is_case_file(path, problems):
            for case in load_cases(path, ENGINE_NAMES):
                case_id = f"{path.name}#{case.name}"
                if case.data is not None:
                    found.skipped.append(f"{case_id} (overrides data: not comparable across versions)")
                else:
                    found.inputs.append(ReplayInput(case_id, str(path), case.line, case.request))
        elif problems:
            raise PolicyLoadError(problems)
        elif explicit:
            raise PolicyLoadError([Problem(str(path), 1, 1, "a YAML input file must be a case file (`cases:`)",
                                           "input_error")])
    elif name.endswith(".jsonl") or name.endswith(".log"):
        for line_no, doc in _json_lines(path):
            found.inputs.append(_from_log(path, line_no, doc))
    elif name.endswith(".json"):
        doc = _json(path.read_text(encoding="utf-8"), str(path), 1)
        if not isinstance(doc, dict):
            raise PolicyLoadError([Problem(str(path), 1, 1, "a JSON input file holds one policy input object",
                                           "input_error")])
        given = doc["input"] if _is_opa_log(doc) else _agentgov_input(doc, str(path), 1)
        found.inputs.append(ReplayInput(path.name, str(path), 1, given))
    elif explicit:
        raise PolicyLoadError([Problem(str(path), 1, 1, "inputs are case files (.yaml), policy inputs (.json), "
                                       "or decision logs (.jsonl)", "input_error")])


def _json(text: str, file: str, line: int) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PolicyLoadError([Problem(file, line, 1, f"invalid JSON: {exc}", "input_error")]) from None


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            doc = _json(line, str(path), line_no)
            if not isinstance(doc, dict):
                raise PolicyLoadError([Problem(str(path), line_no, 1, "each line must be a JSON object",
                                               "input_error")])
            yield line_no, doc


def _is_opa_log(doc: dict[str, Any]) -> bool:
    return "decision_id" in doc and "input" in doc and isinstance(doc["input"], dict)


def _from_log(path: Path, line_no: int, doc: dict[str, Any]) -> ReplayInput:
    where = f"{path.name}:{line_no}"
    if _is_opa_log(doc):  # OPA's decision log: the input is recorded whole
        return ReplayInput(f"{where}:{doc['decision_id']}", str(path), line_no, doc["input"])
    if "actions" in doc and "subject" in doc and "decision_id" in doc:
        return ReplayInput(f"{where}:{doc['decision_id']}", str(path), line_no,
                           _agentgov_input(_from_audit(doc), str(path), line_no))
    raise PolicyLoadError([Problem(str(path), line_no, 1, "neither an OPA decision log entry (decision_id + "
                                   "input) nor an agentgov audit record", "input_error")])


def _agentgov_input(doc: dict[str, Any], file: str, line: int) -> dict[str, Any]:
    """A complete, validated agentgov policy input, as `agentgov eval` and the cases build it."""
    try:
        return normalize_input(doc)
    except InputError as exc:
        raise PolicyLoadError([Problem(file, line, 1, str(exc), "input_error")]) from None


def _from_audit(record: dict[str, Any]) -> dict[str, Any]:
    """The policy input an audit record still describes. The record keeps no arguments and no raw
    PII (by design), so arguments replay as empty and findings as types and counts."""
    action = (record.get("actions") or [{}])[0]
    subject = record.get("subject") or {}
    findings = record.get("findings") or []
    return {
        "subject": {"id": subject.get("id"), "tenant": subject.get("tenant"), "roles": subject.get("roles", []),
                    "authenticated": bool(subject.get("authenticated"))},
        "action": {"kind": action.get("kind"), "name": action.get("name")},
        "resource": {"type": action.get("resource_type"), "id": action.get("resource_id")},
        "arguments": {},
        # An audit record keeps a finding's type, category and count, not where it was: the path the input
        # schema requires is replayed as "(not recorded)" (a policy that reads paths sees that).
        "pii": {"findings": [{"type": f.get("type"), "count": f.get("count", 1), "category": f.get("category", "pii"),
                              "path": f.get("path") or NOT_RECORDED}
                             for f in findings if isinstance(f, dict)]},
        "context": {"phase": record.get("phase", "request")},
    }
