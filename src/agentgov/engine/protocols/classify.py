"""Decide which protocol a request speaks, and parse it: MCP, an LLM API, or plain HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.llm import LLM_PATHS, parse_llm
from agentgov.engine.protocols.mcp import DEFAULT_MAX_BATCH, parse_mcp, parse_mcp_metadata
from agentgov.engine.protocols.parsed import ParsedAction
from agentgov.engine.protocols.paths import normalize_path

MCP_PATH_SUFFIX = "/mcp"


def classify(method: str, path: str, host: str, body: bytes, mcp_paths: tuple[str, ...] = (),
             mcp_metadata: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
             max_batch: int = DEFAULT_MAX_BATCH) -> list[ParsedAction]:
    """One action per request (several for an MCP batch). Raises ProtocolError on malformed bodies.

    The path is read normalised (protocols.paths), as a backend that decodes it will read it.
    `mcp_metadata` is what Envoy's MCP filter parsed. Without a body it is the only source; with a
    body both are read and must agree on the call, so a JSON parser differential between Envoy
    and agentgov (duplicate keys, odd encodings) cannot make the two see different calls. The
    MCP `Mcp-Method` / `Mcp-Name` request headers, when sent, must agree with the body too.
    """
    bare = normalize_path(path.split("?", 1)[0])
    route = bare.rstrip("/") or "/"  # `/mcp/` and `/mcp` reach the same handler on most servers
    if mcp_metadata and mcp_metadata.get("method"):
        server = _mcp_server(route, host)
        from_envoy = parse_mcp_metadata(mcp_metadata, server)
        if not body.strip():
            return _agree_with_headers([from_envoy], headers)
        ours = parse_mcp(body, server, max_batch)
        if len(ours) != 1 or (ours[0].kind, ours[0].name, ours[0].arguments) != (
                from_envoy.kind, from_envoy.name, from_envoy.arguments):
            raise ProtocolError("Envoy's MCP filter and agentgov read different JSON-RPC calls from this body")
        return _agree_with_headers(ours, headers)
    if method == "POST" and (route in mcp_paths or bare in mcp_paths or route.endswith(MCP_PATH_SUFFIX)):
        return _agree_with_headers(parse_mcp(body, _mcp_server(route, host), max_batch), headers)
    if method == "POST" and route in LLM_PATHS:
        return [parse_llm(route, body)]
    # Any other route: the body is still text a detector should see (the PII hook scans it whole).
    texts = (("body", body.decode("utf-8", "replace")),) if body.strip() else ()
    return [ParsedAction("http", f"{method} {bare}", "route", bare, texts=texts, protocol="http")]


# What each action kind's JSON-RPC method is, to compare with an `Mcp-Method` header.
_METHOD_OF_KIND = {"tool.call": "tools/call", "tool.list": "tools/list", "resource.read": "resources/read",
                   "prompt.get": "prompts/get"}


def _agree_with_headers(actions: list[ParsedAction], headers: Mapping[str, str] | None) -> list[ParsedAction]:
    """MCP 2026-07-28 lets clients repeat the method and name in `Mcp-Method` / `Mcp-Name` headers, and
    some servers route by them: they must name what the body names, or the two could differ."""
    if not headers or ("mcp-method" not in headers and "mcp-name" not in headers):
        return actions
    if len(actions) != 1:
        raise ProtocolError("Mcp-Method / Mcp-Name headers cannot describe a JSON-RPC batch")
    action = actions[0]
    method = _METHOD_OF_KIND.get(action.kind, action.name)
    if "mcp-method" in headers and headers["mcp-method"] != method:
        raise ProtocolError("the Mcp-Method header does not match the JSON-RPC method in the body")
    if "mcp-name" in headers and (action.kind not in ("tool.call", "resource.read", "prompt.get")
                                  or headers["mcp-name"] != action.name):
        raise ProtocolError("the Mcp-Name header does not match the name in the body")
    return actions


def _mcp_server(bare_path: str, host: str) -> str:
    """`/crm/mcp` → `crm`; a bare `/mcp` is named by the host."""
    server = bare_path.rstrip("/").rsplit("/", 2)[-2] if bare_path.count("/") >= 2 else host
    return server or host
