"""One audit record: what was decided, for whom, under which policy, with which findings; and the
canonical form its hash is computed over.

A record is one line of canonical JSON (sorted keys, no insignificant whitespace, ASCII only), so
nothing a client sends (a newline in a tool name, a quote, a NUL) can break a line or forge a
field: every string is JSON-escaped. Values of findings never appear, only types and counts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from agentgov.engine.hooks.base import HookRequest
from agentgov.engine.model import Decision

VERSION = 1
GENESIS = "0" * 64  # the `prev` of a chain's first record
MAX_FIELD_CHARS = 512  # names and ids from clients are cut here: a record stays small


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
# orjson writes what json's canonical form writes except: non-ASCII and DEL raw (json escapes them),
# floats below 1e-4 in plain decimals ("0.00001", json "1e-05") and exponents without a sign
# ("1e16", json "1e+16"), NaN and infinities as null (which json reads back as null, so the text
# still is json's canonical form of what it parses to). Output with none of those marks is json's
# text exactly. Each mark is looked for in well under a microsecond; one that only looks like a mark
# (an `e5` in a string) sends that record the slow way, never the wrong way.
_E_THEN_DIGIT = re.compile(rb"e[0-9-]")
_NUMBER_BYTES = frozenset(b"0123456789.-")
_BEFORE_A_VALUE = frozenset(b":,[")


def _in_number(text: bytes, at: int) -> bool:
    """Whether `text[at]` continues a number token: only digits, `.` and `-` back to a `:`, `,` or `[`
    (a SHA-256 in hex reaches a letter or a quote first)."""
    at -= 1
    while at >= 0 and text[at] in _NUMBER_BYTES:
        at -= 1
    return at < 0 or text[at] in _BEFORE_A_VALUE


def _not_as_json_writes(text: bytes) -> bool:
    """Whether orjson's `text` may differ from json's: a number with an exponent or a float below
    1e-4, or anything but printable ASCII."""
    if not text.isascii() or b"\x7f" in text:
        return True
    at = text.find(b"0.0000")
    while at != -1:
        if _in_number(text, at):
            return True
        at = text.find(b"0.0000", at + 1)
    return any(text[m.start() - 1] in _NUMBER_BYTES and _in_number(text, m.start())
               for m in _E_THEN_DIGIT.finditer(text))


_ORJSON_STRICT = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME \
    | orjson.OPT_PASSTHROUGH_SUBCLASS


def canonical(doc: Mapping[str, Any]) -> str:
    """Sorted keys, no insignificant whitespace, ASCII only: what every record's hash is over, and
    what `verify` re-derives from each parsed line (with json, the reference).

    Encoded with orjson when its text is provably json's (see _not_as_json_writes), json otherwise:
    ~3 µs against ~15 for a decision record, on every decision (measured, docs/benchmarks.md)."""
    try:
        fast = orjson.dumps(doc, option=_ORJSON_STRICT)
    except TypeError:  # a type orjson leaves to json (a str subclass, a big int): json decides
        return _CANONICAL.encode(doc)
    if not _not_as_json_writes(fast):
        return fast.decode("ascii")
    return _CANONICAL.encode(doc)


def record_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical record without its own `hash` (it includes `prev`: the chain)."""
    return hashlib.sha256(canonical({k: v for k, v in body.items() if k != "hash"}).encode()).hexdigest()


def _cut(value: str) -> str:
    return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "…"


def decision_body(request: HookRequest, decision: Decision, *, phase: str = "request") -> dict[str, Any]:
    """The record's content, before the chain fields (`chain`, `seq`, `prev`, `hash`) are added."""
    subject = request.subject
    findings: dict[tuple[str, str], int] = {}
    for per_action in request.findings:
        for f in per_action:
            findings[(f.type, f.category)] = findings.get((f.type, f.category), 0) + f.count
    return {
        "v": VERSION,
        "decision_id": request.decision_id,
        "time": datetime.now(UTC).isoformat(timespec="microseconds"),
        "entry_point": request.entry_point,
        "phase": phase,
        "request_id": _cut(request.request_id),
        "subject": {"id": _cut(subject.id), "tenant": subject.tenant, "roles": [_cut(r) for r in subject.roles],
                    "authenticated": subject.authenticated},
        "actions": [{"kind": a.kind, "name": _cut(a.name), "resource_type": a.resource_type,
                     "resource_id": _cut(a.resource_id)} for a in request.actions[:64]],
        "allow": decision.allow,
        "status": decision.status,
        "reasons": [_cut(r) for r in decision.reasons],
        "obligations": {"redact": list(decision.obligations.redact),
                        "headers": sorted(decision.obligations.headers),
                        **({"remove_tools": [_cut(t) for t in decision.obligations.remove_tools]}
                           if decision.obligations.remove_tools else {})},
        "errors": [_cut(e) for e in decision.errors],
        "policy": {"revision": request.policy_revision},
        "findings": [{"type": t, "category": c, "count": n} for (t, c), n in sorted(findings.items())],
        "latency_ms": {stage: round(seconds * 1000, 3) for stage, seconds in request.timings.items()},
        "http": {"method": request.method, "path": _cut(request.path.split("?", 1)[0]), "host": _cut(request.host)},
        **({"approval": {"id": decision.approval.id, "event": decision.approval.event,
                         "expired": list(decision.approval.expired)}} if decision.approval else {}),
    }


def chained(body: Mapping[str, Any], *, chain: str, seq: int, prev: str) -> tuple[dict[str, Any], str]:
    """The record with its chain fields and hash, and its line. The JSON is encoded once: the line is
    the canonical text the hash covers, with `hash` appended as the last key (verify re-derives the
    canonical text from the parsed record, so the key order of the line itself does not matter)."""
    record = {**body, "chain": chain, "seq": seq, "prev": prev}
    text = canonical(record)
    digest = hashlib.sha256(text.encode()).hexdigest()
    record["hash"] = digest
    return record, f'{text[:-1]},"hash":"{digest}"}}\n'



def reasons_text(reasons: Sequence[str]) -> str:
    return ",".join(reasons)
