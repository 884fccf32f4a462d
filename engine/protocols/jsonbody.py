"""Decode a JSON request body with limits, mapping every failure to a client-safe ProtocolError."""

from __future__ import annotations

import json
from typing import Any

from agentgov.engine.protocols.errors import ProtocolError

MAX_DEPTH = 64


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise ProtocolError("request body is empty; a JSON body is required")
    try:
        # Decode explicitly: json.loads(bytes) would guess UTF-16/32 from a BOM (RFC 8259 requires UTF-8).
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("request body is not valid UTF-8") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ProtocolError("request body is nested too deeply") from None
    except _DuplicateKey as exc:
        raise ProtocolError(f"request body repeats the key {exc.key!r} in one object") from None
    if _depth(doc) > MAX_DEPTH:
        raise ProtocolError("request body is nested too deeply")
    return doc


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key[:64]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse repeated keys: parsers disagree on which one wins (Python keeps the last, others the
    first), so a policy could approve one value while the backend acts on the other."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return doc


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def strings_in(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string inside a JSON value with its path, for detectors (keys are not scanned)."""
    out: list[tuple[str, str]] = []
    if isinstance(value, str):
        out.append((path, value))
    elif isinstance(value, dict):
        for k, v in value.items():
            out.extend(strings_in(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(strings_in(v, f"{path}[{i}]"))
    return out
