"""The OPA-Envoy plugin's `input` document, so existing OPA-Envoy policies run unchanged.

Pure: request fields in, input document out. The shape follows the plugin (ext_authz v3,
protojson): `attributes` as Envoy sent them, plus `parsed_path`, `parsed_query`, `parsed_body`,
`truncated_body` and `version`. One deliberate addition: when Envoy packs the body as bytes
(agentgov's Envoy config does, so binary bodies survive), `attributes.request.http.body` is also
filled with the UTF-8 text, so policies written for Envoy's default string body still see it.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from agentgov.engine.protocols.errors import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json

VERSION = {"ext_authz": "v3", "encoding": "protojson"}


def opa_envoy_input(*, method: str, path: str, host: str, headers: Mapping[str, str], body: bytes,
                    body_truncated: bool, source_ip: str = "", request_id: str = "",
                    attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the input. Raises ProtocolError for a JSON body that does not parse (the plugin errors too)."""
    attrs = copy.deepcopy(dict(attributes)) if attributes else _attributes(method, path, host, headers, source_ip,
                                                                          request_id)
    http = attrs.setdefault("request", {}).setdefault("http", {})
    text = _body_text(http, body)
    if text is not None and "body" not in http:
        http["body"] = text
    parsed_path, parsed_query = parse_path(path)
    parsed_body, truncated = _parsed_body(headers, text, body_truncated)
    return {
        "attributes": attrs,
        "parsed_path": parsed_path,
        "parsed_query": parsed_query,
        "parsed_body": parsed_body,
        "truncated_body": truncated,
        "version": dict(VERSION),
    }


def parse_path(path: str) -> tuple[list[str], dict[str, list[str]]]:
    """`/people/a%20b?lang=en&id=1&id=2` → (["people", "a b"], {"lang": ["en"], "id": ["1", "2"]}), as Go's net/url."""
    parts = urlsplit(path)
    segments = unquote(parts.path).lstrip("/").split("/")
    query = parse_qs(parts.query, keep_blank_values=True)
    return segments, query


def _attributes(method: str, path: str, host: str, headers: Mapping[str, str], source_ip: str,
                request_id: str) -> dict[str, Any]:
    """Attributes for a caller that is not Envoy (the decision service's HttpRequest)."""
    http: dict[str, Any] = {"method": method, "path": path, "host": host, "headers": dict(headers)}
    if request_id:
        http["id"] = request_id
    attrs: dict[str, Any] = {"request": {"http": http}}
    if source_ip:
        attrs["source"] = {"address": {"socketAddress": {"address": source_ip}}}
    return attrs


def _body_text(http: Mapping[str, Any], body: bytes) -> str | None:
    if isinstance(http.get("body"), str) and http["body"]:
        return str(http["body"])
    raw = body
    if not raw and isinstance(http.get("rawBody"), str):
        try:
            raw = base64.b64decode(http["rawBody"], validate=True)
        except (binascii.Error, ValueError):
            return None
    if not raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parsed_body(headers: Mapping[str, str], text: str | None, flagged_truncated: bool) -> tuple[Any, bool]:
    """JSON bodies only, as the plugin: a body shorter than Content-Length is truncated and not parsed."""
    if "application/json" not in headers.get("content-type", "") or not text:
        return None, flagged_truncated
    length = headers.get("content-length", "")
    if flagged_truncated or (length.isdigit() and int(length) > len(text.encode("utf-8"))):
        return None, True
    try:
        return decode_json(text.encode("utf-8")), False
    except ProtocolError as exc:
        raise ProtocolError(f"OPA-Envoy input: {exc}") from None
