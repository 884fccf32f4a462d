"""Decode a JSON request body with limits, mapping every failure to a client-safe ProtocolError.

One reading (docs/architecture.md §3): agentgov must read a body exactly as the backend will, so anything two
JSON parsers could read differently is refused rather than guessed at:
- a key repeated in one object (Python keeps the last copy, other parsers the first);
- keys that differ only in case (Go's encoding/json, behind many MCP servers and LLM proxies,
  matches field names case-insensitively and keeps the last);
- numbers not every engine represents alike: integers outside 64 bits (Cedar's Long, regorus),
  floats that overflow to infinity, and the non-JSON constants NaN and Infinity;
- strings with lone UTF-16 surrogates (`"\\ud800"`), which have no UTF-8 form;
- nesting deeper than MAX_DEPTH.
Error messages say what is wrong, never what the body contained (no key names, no values).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from agentgov.engine.protocols.errors import ProtocolError

MAX_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1


class _Refused(ValueError):
    """A body the decoder will not read; `message` is client-safe."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise ProtocolError("request body is empty; a JSON body is required")
    try:
        # Decode explicitly: json.loads(bytes) would guess UTF-16/32 from a BOM (RFC 8259 requires UTF-8).
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("request body is not valid UTF-8") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_parse_int, parse_float=_parse_float,
                         parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ProtocolError("request body is nested too deeply") from None
    except _Refused as exc:
        raise ProtocolError(exc.message) from None
    # The walk below costs more than parsing itself, so it runs only when it could find something:
    # nesting past MAX_DEPTH needs that many brackets, and a lone surrogate can only come from a
    # `\ud8..`-`\udf..` escape (the text was valid UTF-8). Both tests are supersets: never a miss.
    if text.count("{") + text.count("[") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        try:
            _check(doc, 0)
        except _Refused as exc:
            raise ProtocolError(exc.message) from None
    return doc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse repeated keys, also when they differ only in case (see the module docstring)."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _Refused("request body repeats a key in one object")
    if len(doc) > 1 and len({k.casefold() for k in doc}) != len(doc):
        raise _Refused("request body has keys in one object that differ only in case")
    return doc


def _parse_int(text: str) -> int:
    # Check the length first: Python refuses to convert more than 4300 digits (with a ValueError
    # that is not a JSONDecodeError), and anything past 19 digits is outside 64 bits anyway.
    if len(text) > 20:
        raise _Refused("request body has a number outside the 64-bit range every policy engine can represent")
    value = int(text)
    if not _MIN_INT <= value <= _MAX_INT:
        raise _Refused("request body has a number outside the 64-bit range every policy engine can represent")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("request body has a number too large to represent")
    return value


def _parse_constant(name: str) -> Any:
    raise _Refused("request body uses NaN or Infinity, which JSON does not allow")


def _check(value: Any, level: int) -> None:
    """Depth, and strings (keys included) that have a UTF-8 form."""
    if level > MAX_DEPTH:
        raise _Refused("request body is nested too deeply")
    if isinstance(value, str):
        _utf8(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _utf8(k)
            _check(v, level + 1)
    elif isinstance(value, list):
        for v in value:
            _check(v, level + 1)


def _utf8(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused("request body has a string with an unpaired UTF-16 surrogate") from None


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
