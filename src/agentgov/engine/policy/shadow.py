"""Shadow mode's comparison: what a candidate policy set would have answered differently.

The runner evaluates the candidate on the very input the active set decided (after the response
is on its way) and reports here; a difference is a *flip*, counted and, through hooks that record
them (the audit hook), written with both answers. Nothing here is ever enforced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from agentgov.engine.model import Decision

SHADOW_PHASE = "shadow"  # the audit record phase of a flip
FLIP_KINDS = ("allow_to_deny", "deny_to_allow", "status", "reasons", "obligations", "error")

EVALUATIONS = Counter("agentgov_shadow_evaluations_total", "Decisions the shadow candidate was asked about")
FLIPS = Counter("agentgov_shadow_flips_total", "Decisions the shadow candidate would have made differently, by kind",
                ["kind"])
SKIPPED = Counter("agentgov_shadow_skipped_total",
                  "Decisions not shadowed because too many shadow evaluations were already pending (overload)")


def flips(active: Decision, candidate: Decision) -> list[str]:
    """Every way `candidate` differs from `active`, in FLIP_KINDS order; [] when they agree.
    An allow/deny flip is reported alone: its status and reasons differ as a consequence."""
    if active.allow != candidate.allow:
        kinds = ["allow_to_deny" if active.allow else "deny_to_allow"]
    else:
        kinds = []
        if active.status != candidate.status:
            kinds.append("status")
        if tuple(active.reasons) != tuple(candidate.reasons):
            kinds.append("reasons")
        if active.obligations != candidate.obligations:
            kinds.append("obligations")
    if candidate.errors and not active.errors:
        kinds.append("error")
    return kinds


def count(kinds: list[str]) -> None:
    EVALUATIONS.inc()
    for kind in kinds:
        FLIPS.labels(kind=kind).inc()


def candidate_answer(candidate: Decision, revision: str, kinds: list[str], action_index: int) -> dict[str, Any]:
    """The candidate's side of a flip record (the active side is the record itself)."""
    return {"revision": revision, "allow": candidate.allow, "status": candidate.status,
            "reasons": list(candidate.reasons), "errors": list(candidate.errors),
            "obligations": {"redact": list(candidate.obligations.redact),
                            "headers": sorted(candidate.obligations.headers)},
            "flips": kinds, "action_index": action_index}


@dataclass
class FlipGroup:
    """Flips that look alike: same kind, same action, same answers on both sides."""

    kind: str
    action: str
    active: str
    candidate: str
    count: int = 0
    subjects: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)  # decision ids, the first few

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "action": self.action, "active": self.active, "candidate": self.candidate,
                "count": self.count, "subjects": len(self.subjects), "examples": self.examples}


@dataclass
class ShadowReport:
    flips: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    candidates: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)
    first: str = ""
    last: str = ""
    groups: dict[tuple[str, str, str, str], FlipGroup] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"flips": self.flips, "by_kind": dict(sorted(self.by_kind.items())),
                "candidate_revisions": sorted(self.candidates), "active_revisions": sorted(self.active),
                "first": self.first, "last": self.last,
                "groups": [g.to_dict() for g in self.sorted_groups()]}

    def sorted_groups(self) -> list[FlipGroup]:
        return sorted(self.groups.values(), key=lambda g: (-g.count, g.kind, g.action))


def _answer(allow: Any, status: Any, reasons: Any) -> str:
    verdict = "allow" if allow else "deny"
    return f"{verdict} {status} {','.join(reasons or []) or '-'}"


def summarize(records: Iterable[Mapping[str, Any]], *, candidate: str = "", since: str = "") -> ShadowReport:
    """The flips among audit records (phase `shadow`), grouped; `candidate` keeps one candidate
    revision, `since` records at or after an ISO time (compared as text: records use one format)."""
    report = ShadowReport()
    for record in records:
        shadow = record.get("shadow")
        if record.get("phase") != SHADOW_PHASE or not isinstance(shadow, Mapping):
            continue
        if (candidate and shadow.get("revision") != candidate) or (since and str(record.get("time", "")) < since):
            continue
        report.flips += 1
        report.candidates.add(str(shadow.get("revision", "")))
        report.active.add(str((record.get("policy") or {}).get("revision", "")))
        at = str(record.get("time", ""))
        report.first = min(report.first or at, at)
        report.last = max(report.last, at)
        actions = record.get("actions") or []
        index = shadow.get("action_index", 0)
        action = actions[index] if isinstance(index, int) and 0 <= index < len(actions) else {}
        name = f"{action.get('kind', '?')} {action.get('name', '?')}".strip()
        active = _answer(record.get("allow"), record.get("status"), record.get("reasons"))
        answer = _answer(shadow.get("allow"), shadow.get("status"), shadow.get("reasons"))
        for kind in shadow.get("flips") or ["unknown"]:
            report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
            group = report.groups.setdefault((kind, name, active, answer), FlipGroup(kind, name, active, answer))
            group.count += 1
            group.subjects.add(str((record.get("subject") or {}).get("id", "")))
            if len(group.examples) < 3:
                group.examples.append(str(record.get("decision_id", "")))
    return report
