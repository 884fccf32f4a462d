"""Run the detectors over a text and apply the operator's settings: per-type switches, minimum
confidence, allow-lists. Pure and synchronous: it is the hot path of the PII hook."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentgov.engine.hooks.pii.detectors import ALL_TYPES, DETECTORS, DetectContext, Span, Text

DEFAULT_MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class ScanSettings:
    types: frozenset[str] = frozenset(ALL_TYPES)  # the types looked for
    min_confidence: Mapping[str, float] = field(default_factory=dict)  # per type; others use `default_confidence`
    default_confidence: float = DEFAULT_MIN_CONFIDENCE
    allow_values: frozenset[str] = frozenset()  # exact values that are never findings (a support address…)
    allow_patterns: tuple[re.Pattern[str], ...] = ()  # values matching any of these (fullmatch) are never findings
    context: DetectContext = field(default_factory=DetectContext)


class Scanner:
    def __init__(self, settings: ScanSettings | None = None) -> None:
        self.settings = settings or ScanSettings()
        self._detectors = tuple((d, frozenset(d.cues)) for d in DETECTORS if d.type in self.settings.types)
        self._floors = {t: self.settings.min_confidence.get(t, self.settings.default_confidence) for t in ALL_TYPES}

    def scan(self, text: str) -> list[Span]:
        """Non-overlapping findings in `text`, in order. The more specific detector wins an overlap."""
        if not text:
            return []
        candidates: list[tuple[int, int, int, Span]] = []
        ctx = self.settings.context
        scanned = Text(text)
        cues = scanned.cues
        for detector, starts_from in self._detectors:
            if cues is not None and starts_from and starts_from.isdisjoint(cues):
                continue  # none of what it starts from is in this text
            floor = self._floors[detector.type]
            for start, end, confidence in detector.find(scanned, ctx):
                if confidence >= floor and end > start:
                    span = Span(start, end, detector.type, detector.category, confidence)
                    candidates.append((-detector.priority, start - end, start, span))
        if not candidates:
            return []
        candidates.sort(key=lambda c: c[:3])
        taken: list[Span] = []
        for *_, span in candidates:
            if any(span.start < t.end and t.start < span.end for t in taken):
                continue
            if self._allowed(text[span.start:span.end]):
                continue
            taken.append(span)
        taken.sort(key=lambda s: s.start)
        return taken

    def _allowed(self, value: str) -> bool:
        s = self.settings
        return value in s.allow_values or any(p.fullmatch(value) for p in s.allow_patterns)


def redact_text(text: str, spans: Iterable[Span], template: str = "[REDACTED:{type}]",
                types: Iterable[str] | None = None) -> str:
    """`text` with each span (of the given types, or all) replaced by the template."""
    wanted = set(types) if types is not None else None
    out: list[str] = []
    at = 0
    for span in sorted(spans, key=lambda s: s.start):
        if wanted is not None and span.type not in wanted:
            continue
        out.append(text[at:span.start])
        out.append(template.format(type=span.type))
        at = span.end
    out.append(text[at:])
    return "".join(out)
