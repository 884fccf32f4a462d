"""`agentgov diff`: what a policy change would change, decided on real inputs.

Each input is decided by the base and the head policy set, on every engine both have; any
difference (allow, status, reasons, obligations, a new engine error) is a change. Changes an
approvals file lists (by input id, optionally pinning the head's answer) pass; any other fails
the gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.model import Decision
from agentgov.engine.policy.problems import PolicyLoadError, Problem
from agentgov.engine.testing.replay import ReplayInput

COMPARED = ("allow", "status", "reasons", "obligations")


@dataclass(frozen=True)
class Change:
    input: ReplayInput
    engine: str
    base: dict[str, Any]
    head: dict[str, Any]
    fields: tuple[str, ...]      # which of allow/status/reasons/obligations/errors differ
    approved_by: str = ""        # the approval's `why`, when one covers this change

    @property
    def kind(self) -> str:
        if "allow" in self.fields:
            return "allow→deny" if self.base["allow"] else "deny→allow"
        if "errors" in self.fields:
            return "new error" if self.head.get("errors") else "error gone"
        return " + ".join(f"{f} changed" for f in self.fields)


@dataclass
class DiffReport:
    replayed: int
    engines: tuple[str, ...]
    changes: list[Change] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unused_approvals: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> list[Change]:
        return [c for c in self.changes if not c.approved_by]


@dataclass(frozen=True)
class Approval:
    input: str
    engine: str | None
    to: Mapping[str, Any]
    why: str


def load_approvals(path: Path) -> list[Approval]:
    """`approve: [{input: ID, engine?: rego|cedar, to?: {allow?, status?, reasons?}, why: TEXT}]`."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PolicyLoadError([Problem(str(path), 1, 1, f"cannot read approvals: {exc}", "approvals_error")]) from None
    entries = doc.get("approve") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise PolicyLoadError([Problem(str(path), 1, 1, "approvals file needs an `approve:` list", "approvals_error")])
    approvals = []
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("input"), str) and isinstance(entry.get("why"), str)
                and entry["why"].strip()):
            raise PolicyLoadError([Problem(str(path), 1, 1, f"approve[{index}] needs `input` and a non-empty `why`",
                                           "approvals_error")])
        to = entry.get("to", {})
        if not isinstance(to, dict) or set(to) - {"allow", "status", "reasons", "obligations"}:
            raise PolicyLoadError([Problem(str(path), 1, 1, f"approve[{index}].to may pin allow, status, reasons, "
                                           "obligations", "approvals_error")])
        approvals.append(Approval(entry["input"], entry.get("engine"), to, entry["why"].strip()))
    return approvals


def run_diff(inputs: Sequence[ReplayInput], base: Mapping[str, DecisionBackend],
             head: Mapping[str, DecisionBackend], approvals: Sequence[Approval] = (),
             skipped: Sequence[str] = ()) -> DiffReport:
    return asyncio.run(_diff(inputs, base, head, approvals, skipped))


async def _diff(inputs: Sequence[ReplayInput], base: Mapping[str, DecisionBackend],
                head: Mapping[str, DecisionBackend], approvals: Sequence[Approval],
                skipped: Sequence[str]) -> DiffReport:
    engines = tuple(e for e in base if e in head)
    if not engines:
        raise PolicyLoadError([Problem("diff", 0, 0, f"no engine in common (base: {sorted(base)}, head: "
                                       f"{sorted(head)})", "diff_error")])
    report = DiffReport(len(inputs), engines, skipped=list(skipped))
    used: set[int] = set()
    for item in inputs:
        for engine in engines:
            before = _answer(await base[engine].evaluate(item.input))
            after = _answer(await head[engine].evaluate(item.input))
            differing = tuple(f for f in (*COMPARED, "errors") if before.get(f) != after.get(f))
            if not differing:
                continue
            why = ""
            for index, approval in enumerate(approvals):
                if _covers(approval, item, engine, after):
                    why = approval.why
                    used.add(index)
                    break
            report.changes.append(Change(item, engine, before, after, differing, why))
    report.unused_approvals = [a.input for i, a in enumerate(approvals) if i not in used]
    return report


def _answer(decision: Decision) -> dict[str, Any]:
    out = decision.to_dict()
    out.pop("directives", None)
    out["errors"] = sorted(set(out.get("errors", [])))
    return out


def _covers(approval: Approval, item: ReplayInput, engine: str, after: Mapping[str, Any]) -> bool:
    if approval.input != item.id or (approval.engine and approval.engine != engine):
        return False
    return all(after.get(key) == value for key, value in approval.to.items())
