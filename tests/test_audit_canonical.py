"""The audit record's canonical text is json's (sorted keys, compact, ASCII), whichever encoder wrote
it: `verify` re-derives it with json from each parsed line, so the two must never differ."""

from __future__ import annotations

import enum
import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentgov.engine.hooks.audit import record
from agentgov.engine.hooks.audit.record import canonical


def reference(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e-5, 2.5e-05, 1e16, 1e-4, 0.001, -0.0])
            | st.text(max_size=12) | st.sampled_from(["e-1", "1e5", "\x7f", "0.00001", "café", "\U0001f600", "\n"]))
_DOCS = st.dictionaries(st.text(max_size=6), st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20), max_size=6)


@settings(max_examples=600, deadline=None)
@given(_DOCS)
@example({"big": 1e16})
@example({"prev": "3e5a" * 16, "list": [1e20, "e-1"], "neg": -2.5e-30})
@example({"tiny": 2.5e-05, "least": 5e-324})
@example({"del": "\x7f", "nan": float("nan"), "inf": [float("inf")]})
def test_the_text_is_what_json_writes(doc: dict[str, Any]) -> None:
    text = canonical(doc)
    # What verify does: parse the line and write its canonical form again; it must be the same text.
    assert reference(json.loads(text)) == text
    if _finite(doc):
        assert text == reference(doc)


def test_records_the_log_writes_take_the_fast_path_and_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes in hex are full of `e` before a digit; they must not send every record the slow way."""
    chain = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(200)]
    docs = [{"v": 1, "latency_ms": {"policy": 0.123, "hook.pii": 1.5, "total": 0.02 * n}, "allow": True, "seq": n,
             "subject": {"id": "alice", "roles": ["analyst"]}, "reasons": ["one-time"], "prev": prev,
             "time": f"2026-12-03T20:00:{n % 60:02d}.{123456 + n:06d}+00:00"} for n, prev in enumerate(chain)]
    expected = [reference(d) for d in docs]

    class NoSlowWay:
        def encode(self, doc: object) -> str:
            raise AssertionError(f"took json for {doc}")

    monkeypatch.setattr(record, "_CANONICAL", NoSlowWay())
    assert [canonical(d) for d in docs] == expected


class Colour(enum.StrEnum):
    RED = "red"


def test_types_orjson_would_read_differently_are_left_to_json() -> None:
    assert canonical({"c": Colour.RED}) == reference({"c": Colour.RED})
    assert canonical({"n": 2**80}) == reference({"n": 2**80})
    assert canonical({"x": 1e-05, "y": 1e16, "s": "naïve"}) == reference({"x": 1e-05, "y": 1e16, "s": "naïve"})
