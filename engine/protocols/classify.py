"""Decide which protocol a request speaks, and parse it: MCP, an LLM API, or plain HTTP."""

from __future__ import annotations

from agentgov.engine.protocols.llm import LLM_PATHS, parse_llm
from agentgov.engine.protocols.mcp import parse_mcp
from agentgov.engine.protocols.parsed import ParsedAction

MCP_PATH_SUFFIX = "/mcp"


def classify(method: str, path: str, host: str, body: bytes, mcp_paths: tuple[str, ...] = ()) -> list[ParsedAction]:
    """One action per request (several for an MCP batch). Raises ProtocolError on malformed bodies."""
    bare = path.split("?", 1)[0]
    if method == "POST" and (bare in mcp_paths or bare.endswith(MCP_PATH_SUFFIX)):
        server = bare.rstrip("/").rsplit("/", 2)[-2] if bare.count("/") >= 2 else host
        return parse_mcp(body, server or host)
    if method == "POST" and bare in LLM_PATHS:
        return [parse_llm(bare, body)]
    return [ParsedAction("http", f"{method} {bare}", "route", bare, protocol="http")]
