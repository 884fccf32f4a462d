"""What the console shows, read from where agentgov keeps it: decisions, refusals and shadow flips
from the hash-chained audit log; budgets and approvals from their stores; chain status and verify
from the audit directory. Pure reading: nothing here changes state except an approver's decision,
which goes through the same code as `agentgov approvals` (engine.approvals.evidence)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentgov.console.settings import ConsoleConfigError
from agentgov.engine.approvals.links import LinkKeyError, load_link_key
from agentgov.engine.approvals.settings import ApprovalsConfigError, ApprovalSettings, link_key_path
from agentgov.engine.approvals.settings import settings_from_config as approval_settings
from agentgov.engine.config import Config
from agentgov.engine.hooks.audit.chain import CHECKPOINTS_SUFFIX, load_signing_key
from agentgov.engine.hooks.audit.hook import AuditConfigError, AuditSettings
from agentgov.engine.hooks.audit.hook import settings_from_config as audit_settings
from agentgov.engine.hooks.audit.verify import VerifyReport, log_files, verify
from agentgov.engine.hooks.budget.limits import BudgetConfigError, BudgetSettings
from agentgov.engine.hooks.budget.limits import settings_from_config as budget_settings
from agentgov.engine.policy.shadow import summarize

TAIL_BYTES = 1 << 20  # read at most this much of each chain's newest file per refresh
MAX_RECORDS = 2000  # the newest records the console looks at, across chains
FILTERS = ("subject", "tenant", "action", "decision", "reason")


@dataclass(frozen=True)
class Sources:
    cfg: Config
    audit: AuditSettings | None
    verify_key: Any  # Ed25519PublicKey | None: authenticates checkpoints when the signing key is configured
    budgets: BudgetSettings | None
    approvals: ApprovalSettings | None
    link_key: bytes | None  # verifies the approve/deny links in notifications (approvals.links)

    @property
    def audit_dir(self) -> Path | None:
        return self.audit.directory if self.audit is not None else None


def sources_from(cfg: Config) -> Sources:
    """Each section as the workers read it. Any problem with one is a ConsoleConfigError naming it,
    so `serve` (checking before it starts anything) and `agentgov console` report it alike."""
    try:
        audit = audit_settings(cfg.audit, cfg.base)
        key = None
        if audit is not None and audit.signing_key_file is not None and audit.signing_key_file.exists():
            key = load_signing_key(audit.signing_key_file).public_key()
        approvals = approval_settings(cfg.approvals) if cfg.approvals is not None else None
        link_key = load_link_key(link_key_path(approvals.links, cfg.base)) \
            if approvals is not None and approvals.links is not None else None
        return Sources(cfg, audit, key, budget_settings(cfg.budgets) if cfg.budgets is not None else None,
                       approvals, link_key)
    except (AuditConfigError, ApprovalsConfigError, BudgetConfigError, LinkKeyError) as exc:
        raise ConsoleConfigError(str(exc)) from None


# --- the audit log -----------------------------------------------------------------------------

def _tail_lines(path: Path, limit: int) -> list[bytes]:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - limit))
        data = f.read()
    lines = data.split(b"\n")
    if size > limit:
        lines = lines[1:]  # the first is cut
    return [line for line in lines if line.strip()]


def recent_records(directory: Path | None, limit: int = MAX_RECORDS) -> list[dict[str, Any]]:
    """The newest records of every chain, newest first (a line that is not a record is skipped:
    `audit verify` is where it is reported)."""
    if directory is None or not directory.is_dir():
        return []
    records: list[dict[str, Any]] = []
    for files in log_files([directory]).values():
        for raw in _tail_lines(files[-1], TAIL_BYTES)[-limit:]:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    records.sort(key=lambda r: str(r.get("time", "")), reverse=True)
    return records[:limit]


def _action(record: Mapping[str, Any]) -> str:
    actions = record.get("actions") or []
    first = actions[0] if actions and isinstance(actions[0], Mapping) else {}
    more = f" (+{len(actions) - 1})" if len(actions) > 1 else ""
    return f"{first.get('kind', '-')} {first.get('name', '')}".strip() + more


def decision_row(record: Mapping[str, Any]) -> dict[str, Any]:
    subject = record.get("subject") or {}
    return {"id": str(record.get("decision_id", "")), "time": str(record.get("time", ""))[:23].replace("T", " "),
            "subject": str(subject.get("id", "")), "tenant": str(subject.get("tenant") or ""),
            "action": _action(record), "allow": bool(record.get("allow")), "status": record.get("status"),
            "reasons": [str(r) for r in record.get("reasons") or []], "phase": str(record.get("phase", "")),
            "entry_point": str(record.get("entry_point", ""))}


def decisions(records: Iterable[Mapping[str, Any]], filters: Mapping[str, str], limit: int = 100) -> list[dict[str, Any]]:
    """Decisions (not shadow flips), newest first, filtered by the console's fields (substring match,
    case-insensitive; `decision` is allow or deny)."""
    wanted = {k: v.strip().lower() for k, v in filters.items() if k in FILTERS and v.strip()}
    out: list[dict[str, Any]] = []
    for record in records:
        if record.get("phase") == "shadow":
            continue
        row = decision_row(record)
        if "decision" in wanted and wanted["decision"] != ("allow" if row["allow"] else "deny"):
            continue
        if any(wanted[k] not in row[k].lower() for k in ("subject", "tenant", "action") if k in wanted):
            continue
        if "reason" in wanted and not any(wanted["reason"] in r.lower() for r in row["reasons"]):
            continue
        out.append(row)
        if len(out) >= limit:
            break
    return out


def decision_detail(records: Iterable[Mapping[str, Any]], decision_id: str) -> list[dict[str, Any]]:
    """Every record of one decision (its request and response phases): stages with their time,
    findings as types and counts (values are never recorded), and where it sits in its chain."""
    out = []
    for record in records:
        if record.get("decision_id") != decision_id:
            continue
        out.append({**decision_row(record),
                    "stages": sorted((record.get("latency_ms") or {}).items()),
                    "findings": list(record.get("findings") or []),
                    "obligations": record.get("obligations") or {},
                    "policy_revision": str((record.get("policy") or {}).get("revision", "")),
                    "approval": record.get("approval"), "http": record.get("http") or {},
                    "chain": str(record.get("chain", "")), "seq": record.get("seq"),
                    "hash": str(record.get("hash", "")), "prev": str(record.get("prev", "")),
                    "errors": list(record.get("errors") or [])})
    return out


def refusals(records: Iterable[Mapping[str, Any]], minutes: int = 30, now: datetime | None = None) -> dict[str, Any]:
    """Refusals per minute by reason (the chart's series) and per subject, over the last `minutes`."""
    now = now or datetime.now(UTC)
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    labels = [(start + timedelta(minutes=i)).strftime("%H:%M") for i in range(minutes)]
    by_reason: dict[str, list[int]] = {}
    by_subject: Counter[str] = Counter()
    for record in records:
        if record.get("allow") or record.get("phase") in ("shadow", "approval"):
            continue
        try:
            at = datetime.fromisoformat(str(record.get("time", "")))
        except ValueError:
            continue
        index = int((at - start).total_seconds() // 60)
        if not 0 <= index < minutes:
            continue
        for reason in (record.get("reasons") or ["denied"])[:1]:  # the first reason: what refused it
            by_reason.setdefault(str(reason), [0] * minutes)[index] += 1
        by_subject[str((record.get("subject") or {}).get("id", ""))] += 1
    return {"labels": labels, "by_reason": dict(sorted(by_reason.items())),
            "by_subject": dict(by_subject.most_common(10))}


def shadow_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return summarize(records).to_dict()


def revisions(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """Policy revisions that decided the recent records, the newest first, with their counts."""
    seen: dict[str, int] = {}
    for record in records:
        if record.get("phase") in ("shadow", "approval"):
            continue
        revision = str((record.get("policy") or {}).get("revision", ""))
        if revision:
            seen[revision] = seen.get(revision, 0) + 1
    return list(seen.items())


def chains(directory: Path | None) -> list[dict[str, Any]]:
    """Every chain: its files, the newest record and the last checkpoint."""
    if directory is None or not directory.is_dir():
        return []
    out = []
    for chain, files in sorted(log_files([directory]).items()):
        tail = _tail_lines(files[-1], 64 * 1024)
        last: dict[str, Any] = {}
        if tail:
            try:
                last = json.loads(tail[-1])
            except ValueError:
                last = {}
        checkpoint: dict[str, Any] = {}
        cp_path = directory / f"{chain}{CHECKPOINTS_SUFFIX}"
        if cp_path.exists():
            cp_tail = _tail_lines(cp_path, 4096)
            if cp_tail:
                try:
                    checkpoint = json.loads(cp_tail[-1])
                except ValueError:
                    checkpoint = {}
        out.append({"chain": chain, "files": len(files), "head_seq": last.get("seq"),
                    "last_time": str(last.get("time", ""))[:19].replace("T", " "),
                    "checkpoint_seq": checkpoint.get("seq"),
                    "checkpoint_time": str(checkpoint.get("time", ""))[:19].replace("T", " ")})
    return out


def run_verify(sources: Sources) -> VerifyReport:
    if sources.audit_dir is None:
        return VerifyReport(notes=["audit is off in this configuration (no audit.dir)"])
    return verify([sources.audit_dir], sources.verify_key)
