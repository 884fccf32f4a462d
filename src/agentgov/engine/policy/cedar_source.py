"""Cedar policy text: locate statements, parse, validate, and split authorization from obligations.

cedarpy's parse errors carry no location, so statements are split here (a small scanner that
respects strings and comments) and parsed one by one to name the file and line that fails. Cedar
numbers policies `policy0…` in text order, which maps validation errors back to lines too.

Policies annotated `@obligation("…")` are not authorization policies: agentgov evaluates them only
after an allow, and each one satisfied adds its obligation (`redact` or `header:Name=Value`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import cedarpy

from agentgov.engine.backends.base import read_approval
from agentgov.engine.model import ApprovalSpec
from agentgov.engine.policy.problems import PolicyLoadError, Problem

OBLIGATION = "obligation"


@dataclass(frozen=True)
class Statement:
    file: str
    line: int
    col: int
    text: str


_UNEXPECTED = re.compile(r"unexpected token `([^`]+)`")


def _error_position(st: Statement, message: str) -> tuple[int, int]:
    """Where in the statement a parse error is. cedarpy names the unexpected token but not where it
    is: the first occurrence after which a prefix of the statement fails the same way is the one."""
    m = _UNEXPECTED.search(message)
    if m is not None:
        token = m.group(1)
        for hit in re.finditer(re.escape(token), st.text):
            try:
                cedarpy.PolicySet.from_str(st.text[:hit.end()])
            except ValueError as exc:
                if str(exc) == message:
                    before = st.text[:hit.start()]
                    line = st.line + before.count("\n")
                    col = (st.col + len(before)) if "\n" not in before else len(before) - before.rindex("\n")
                    return line, col
    return st.line, st.col


@dataclass(frozen=True)
class CedarPolicies:
    """Parsed text, split in two, with the location and annotations of every policy."""

    authorization: str
    obligations: str
    locations: dict[str, Statement]  # policy id (or @id) → where it is
    annotations: dict[str, dict[str, str]]  # policy id → annotations
    authorization_ids: dict[str, str]  # authorization-set policy id → display id
    obligation_ids: dict[str, str]


def split_statements(file: str, source: str) -> list[Statement]:
    out: list[Statement] = []
    i, line, col = 0, 1, 1
    start: tuple[int, int, int] | None = None
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "/" and i + 1 < n and source[i + 1] == "/":
            while i < n and source[i] != "\n":
                i += 1
            continue
        if ch == "\n":
            i, line, col = i + 1, line + 1, 1
            continue
        if start is None and not ch.isspace():
            start = (i, line, col)
        if ch == '"':
            i, col = i + 1, col + 1
            while i < n and source[i] != '"':
                step = 2 if source[i] == "\\" else 1
                for k in range(step):
                    if i + k < n and source[i + k] == "\n":
                        line, col = line + 1, 0
                i, col = i + step, col + step
        elif ch == ";" and start is not None:
            out.append(Statement(file, start[1], start[2], source[start[0]:i + 1]))
            start = None
        i, col = i + 1, col + 1
    if start is not None:
        out.append(Statement(file, start[1], start[2], source[start[0]:]))
    return out


def load_cedar(files: list[tuple[str, str]], schema: tuple[str, str] | None) -> CedarPolicies:
    """Parse and (with a schema) validate; raise PolicyLoadError with file:line for every problem."""
    statements = [s for file, source in files for s in split_statements(file, source)]
    problems: list[Problem] = []
    for st in statements:
        try:
            cedarpy.PolicySet.from_str(st.text)
        except ValueError as exc:
            line, col = _error_position(st, str(exc))
            problems.append(Problem(st.file, line, col, f"cedar parse error: {exc}", "cedar_parse_error"))
    if problems:
        raise PolicyLoadError(problems)
    text = "\n".join(st.text for st in statements)
    doc = json.loads(cedarpy.policies_to_json_str(text))
    policies: dict[str, Any] = doc["staticPolicies"]
    by_index = {f"policy{i}": st for i, st in enumerate(statements)}
    annotations = {pid: dict(p.get("annotations") or {}) for pid, p in policies.items()}
    seen: dict[str, str] = {}
    for pid, ann in annotations.items():
        display = ann.get("id")
        if display is not None:
            if display in seen:
                st = by_index[pid]
                problems.append(Problem(st.file, st.line, st.col,
                                        f"duplicate @id(\"{display}\") (also {by_index[seen[display]].file}:"
                                        f"{by_index[seen[display]].line})", "cedar_parse_error"))
            seen[display] = pid
        obligation = ann.get(OBLIGATION)
        if obligation is not None and not _valid_obligation(obligation):
            st = by_index[pid]
            problems.append(Problem(st.file, st.line, st.col,
                                    f"@obligation(\"{obligation}\") must be \"redact\", \"approval\" or "
                                    "\"header:Name=Value\"", "cedar_parse_error"))
        if obligation == "approval":
            why = approval_annotation_problem(ann)
            if why:
                st = by_index[pid]
                problems.append(Problem(st.file, st.line, st.col, why, "cedar_parse_error"))
        if obligation is not None and policies[pid]["effect"] != "permit":
            st = by_index[pid]
            problems.append(Problem(st.file, st.line, st.col, "an @obligation policy must be a permit",
                                    "cedar_parse_error"))
    if schema is not None:
        problems.extend(_validate(text, schema, by_index))
    if problems:
        raise PolicyLoadError(problems)
    authz = {pid: p for pid, p in policies.items() if OBLIGATION not in annotations[pid]}
    oblig = {pid: p for pid, p in policies.items() if OBLIGATION in annotations[pid]}
    return CedarPolicies(
        authorization="\n".join(by_index[pid].text for pid in authz),
        obligations="\n".join(by_index[pid].text for pid in oblig),
        locations={pid: by_index[pid] for pid in policies},
        annotations=annotations,
        authorization_ids=_renumber(authz, annotations),
        obligation_ids=_renumber(oblig, annotations),
    )


def approval_spec(annotations: dict[str, str]) -> ApprovalSpec:
    """An `@obligation("approval")` policy's approval: `@approvers("role,role")` (required), and
    `@reason`, `@ttl_s`, `@uses` (optional), read as Rego's `obligations.approval` is."""
    doc: dict[str, Any] = {"approvers": [a.strip() for a in annotations.get("approvers", "").split(",") if a.strip()]}
    if "reason" in annotations:
        doc["reason"] = annotations["reason"]
    for key in ("ttl_s", "uses"):
        if key in annotations:
            text = annotations[key].strip()
            doc[key] = int(text) if text.isdigit() else text
    spec = read_approval(doc)
    if not isinstance(spec, ApprovalSpec):
        raise ValueError(spec or "no approval")
    return spec


def approval_annotation_problem(annotations: dict[str, str]) -> str:
    try:
        approval_spec(annotations)
    except ValueError as exc:
        return f"@obligation(\"approval\"): {exc} (annotations @approvers, @reason, @ttl_s, @uses)"
    return ""


def _valid_obligation(value: str) -> bool:
    if value in ("redact", "approval"):
        return True
    name, sep, _ = value.removeprefix("header:").partition("=")
    return value.startswith("header:") and bool(sep) and bool(name)


def parse_schema(file: str, source: str) -> cedarpy.Schema:
    """A `.cedarschema.json` file is Cedar's JSON schema format; anything else, Cedar schema syntax."""
    if file.endswith(".json"):
        return cedarpy.Schema.from_json_str(source)
    return cedarpy.Schema.from_str(source)


def _validate(text: str, schema: tuple[str, str], by_index: dict[str, Statement]) -> list[Problem]:
    file, source = schema
    try:
        parsed_schema = parse_schema(file, source)
        result = cedarpy.validate_policies(text, parsed_schema)
    except ValueError as exc:
        return [Problem(file, 1, 1, f"invalid Cedar schema: {exc}", "cedar_schema_error")]
    problems: list[Problem] = []
    for err in result.errors:
        st = by_index.get(err.policy_id)
        where = (st.file, st.line, st.col) if st else (file, 1, 1)
        problems.append(Problem(*where, f"cedar validation: {err.error}", "cedar_type_error"))
    return problems


def _renumber(subset: dict[str, Any], annotations: dict[str, dict[str, str]]) -> dict[str, str]:
    """Re-parsing a subset renumbers it policy0…; map the new ids to display ids (@id, else original)."""
    return {f"policy{i}": annotations[pid].get("id", pid) for i, pid in enumerate(subset)}
