"""Scan and redact the string values of a JSON document (keys are names, not data)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agentgov.engine.hooks.pii.detectors import Span
from agentgov.engine.hooks.pii.scanner import Scanner, redact_text
from agentgov.engine.protocols.jsonbody import strings_in


def scan_strings(scanner: Scanner, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[Span]]]:
    """(path, spans) for every (path, text) pair with at least one finding."""
    out: list[tuple[str, list[Span]]] = []
    for path, text in pairs:
        spans = scanner.scan(text)
        if spans:
            out.append((path, spans))
    return out


def scan_document(scanner: Scanner, doc: Any, root: str = "") -> list[tuple[str, list[Span]]]:
    return scan_strings(scanner, strings_in(doc, root))


def redact_document(doc: Any, scanner: Scanner, types: Iterable[str], template: str) -> tuple[Any, int]:
    """A copy of `doc` with findings of `types` in its string values replaced; and how many were."""
    wanted = frozenset(types)
    count = 0

    def text(value: str) -> str:
        nonlocal count
        spans = [s for s in scanner.scan(value) if s.type in wanted]
        if not spans:
            return value
        count += len(spans)
        return redact_text(value, spans, template)

    return map_strings(doc, text), count


def map_strings(doc: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(doc, str):
        return fn(doc)
    if isinstance(doc, dict):
        return {k: map_strings(v, fn) for k, v in doc.items()}
    if isinstance(doc, list):
        return [map_strings(v, fn) for v in doc]
    return doc
