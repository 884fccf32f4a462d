"""Decide which protocol a request speaks, and parse it: MCP, an LLM API, or plain HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.llm import LLM_PATHS, parse_llm
from agentgov.engine.protocols.mcp import parse_mcp, parse_mcp_metadata
from agentgov.engine.protocols.parsed import ParsedAction

MCP_PATH_SUFFIX = "/mcp"


def classify(method: str, path: str, host: str, body: bytes, mcp_paths: tuple[str, ...] = (),
             mcp_metadata: Mapping[str, Any] | None = None) -> list[ParsedAction]:
    """One action per request (several for an MCP batch). Raises ProtocolError on malformed bodies.

    `mcp_metadata` is what Envoy's MCP filter parsed. Without a body it is the only source; with a
    body both are read and must agree on the call, so a JSON parser differential between Envoy
    and agentgov (duplicate keys, odd encodings) cannot make the two see different calls.
    """
    bare = path.split("?", 1)[0]
    if mcp_metadata and mcp_metadata.get("method"):
        server = _mcp_server(bare, host)
        from_envoy = parse_mcp_metadata(mcp_metadata, server)
        if not body.strip():
            return [from_envoy]
        ours = parse_mcp(body, server)
        if len(ours) != 1 or (ours[0].kind, ours[0].name, ours[0].arguments) != (
                from_envoy.kind, from_envoy.name, from_envoy.arguments):
            raise ProtocolError("Envoy's MCP filter and agentgov read different JSON-RPC calls from this body")
        return ours
    if method == "POST" and (bare in mcp_paths or bare.endswith(MCP_PATH_SUFFIX)):
        return parse_mcp(body, _mcp_server(bare, host))
    if method == "POST" and bare in LLM_PATHS:
        return [parse_llm(bare, body)]
    # Any other route: the body is still text a detector should see (the PII hook scans it whole).
    texts = (("body", body.decode("utf-8", "replace")),) if body.strip() else ()
    return [ParsedAction("http", f"{method} {bare}", "route", bare, texts=texts, protocol="http")]


def _mcp_server(bare_path: str, host: str) -> str:
    """`/crm/mcp` → `crm`; a bare `/mcp` is named by the host."""
    server = bare_path.rstrip("/").rsplit("/", 2)[-2] if bare_path.count("/") >= 2 else host
    return server or host
