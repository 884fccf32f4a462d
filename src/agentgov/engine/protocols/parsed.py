"""What a parser extracts from one request: the action, its resource, arguments and the text to scan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ParsedAction:
    kind: str
    name: str
    resource_type: str
    resource_id: str
    arguments: dict[str, Any] = field(default_factory=dict)
    # (path, text) pairs that detectors scan: prompt messages, tool arguments.
    texts: tuple[tuple[str, str], ...] = ()
    protocol: str = "http"
