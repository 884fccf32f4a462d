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
    # An LLM request's tools the model may call (`input.llm.tools`): name and argument-schema size.
    tools: tuple[OfferedTool, ...] = ()
    # A JSON-RPC request's id (MCP): a refusal that the client must act on (an approval) is answered
    # as a JSON-RPC error for this id.
    rpc_id: str | int | None = None


@dataclass(frozen=True)
class OfferedTool:
    name: str
    schema_bytes: int = 0  # the size of its argument schema as sent (a policy may cap it)

    def to_input(self) -> dict[str, Any]:
        return {"name": self.name, "schema_bytes": self.schema_bytes}
