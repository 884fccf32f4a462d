"""MCP JSON-RPC over Streamable HTTP: single messages and batches.

A batch is decided as a whole: each message becomes its own action, and the request is allowed
only if every one is (see server.ext_authz).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json, strings_in
from agentgov.engine.protocols.parsed import ParsedAction

DEFAULT_MAX_BATCH = 32  # JSON-RPC messages in one batch: each is a decision, so the work per request is bounded


def parse_mcp(body: bytes, server: str, max_batch: int = DEFAULT_MAX_BATCH) -> list[ParsedAction]:
    doc = decode_json(body)
    messages = doc if isinstance(doc, list) else [doc]
    if not messages:
        raise ProtocolError("empty JSON-RPC batch")
    if len(messages) > max_batch:
        raise ProtocolError(f"JSON-RPC batch of {len(messages)} messages; at most {max_batch} are accepted")
    return [parse_message(m, server) for m in messages]


def parse_mcp_metadata(metadata: Mapping[str, Any], server: str) -> ParsedAction:
    """The message Envoy's MCP filter left in dynamic metadata (`method`, `id`, `params`).

    Metadata is a protobuf Struct, where every number is a double: whole numbers are turned back
    into integers so policies compare `max_results <= 50` as they would on the body.
    """
    method = metadata.get("method")
    if method == "__jsonrpc_response":
        return ParsedAction("mcp.session", "response", "server", server, protocol="mcp")
    return parse_message({"jsonrpc": "2.0", "method": method, "params": _integral(metadata.get("params"))}, server)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def parse_message(message: Any, server: str) -> ParsedAction:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise ProtocolError('not a JSON-RPC 2.0 message (expected an object with "jsonrpc": "2.0")')
    if "method" not in message:
        # A response from the client (to a server request, e.g. sampling): no action of its own.
        if "result" in message or "error" in message:
            return ParsedAction("mcp.session", "response", "server", server, protocol="mcp")
        raise ProtocolError("JSON-RPC message has no method")
    method = message["method"]
    if not isinstance(method, str) or not method:
        raise ProtocolError("JSON-RPC method must be a non-empty string")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError("JSON-RPC params must be an object")
    raw_id = message.get("id")
    rpc_id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    if method == "tools/call":
        name, arguments = _name_and_arguments(method, params)
        return ParsedAction("tool.call", name, "tool", name, arguments,
                            tuple(strings_in(arguments, "arguments")), "mcp", rpc_id=rpc_id)
    if method == "tools/list":
        return ParsedAction("tool.list", method, "server", server, protocol="mcp")
    if method == "resources/read":
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise ProtocolError("resources/read needs params.uri")
        return ParsedAction("resource.read", uri, "resource", uri, {"uri": uri}, (("params.uri", uri),), "mcp",
                            rpc_id=rpc_id)
    if method == "prompts/get":
        name, arguments = _name_and_arguments(method, params)
        return ParsedAction("prompt.get", name, "prompt", name, arguments,
                            tuple(strings_in(arguments, "arguments")), "mcp", rpc_id=rpc_id)
    # initialize, ping, notifications/* and any other method (resources/list, prompts/list, …) are
    # session-level actions named by their method: policy decides, nothing is allowed implicitly.
    return ParsedAction("mcp.session", method, "server", server, protocol="mcp")


def _name_and_arguments(method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`params.name` (required) and `params.arguments` (an object; absent or null means {})."""
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{method} needs params.name")
    arguments = params.get("arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ProtocolError(f"{method} params.arguments must be an object")
    return name, arguments
