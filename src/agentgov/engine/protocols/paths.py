"""The one reading of a request path: RFC 3986 normalisation, so that `/v1/chat/%63ompletions`,
`/v1/./chat/completions` and `/v1//chat/completions` are classified as what a backend that
decodes and normalises them will serve (Envoy is configured to normalise too: envoy-config)."""

from __future__ import annotations

import re

from agentgov.engine.protocols.errors import ProtocolError

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def normalize_path(path: str) -> str:
    """The path (query excluded) with unreserved characters decoded, other escapes upper-cased,
    dot segments removed and repeated slashes merged. An encoded slash or backslash is refused:
    backends disagree on whether `a%2Fb` is one segment or two."""
    if "%" in path:
        if re.search(r"%(?![0-9A-Fa-f]{2})", path):
            raise ProtocolError("request path has a malformed percent-escape")
        path = _ESCAPE.sub(_decode_unreserved, path)
        if re.search(r"%(2F|5C)", path):
            raise ProtocolError("request path has an encoded slash or backslash")
    if "\\" in path:
        raise ProtocolError("request path has a backslash")
    if "//" in path:
        path = re.sub(r"/{2,}", "/", path)
    if "." in path:
        path = _remove_dot_segments(path)
    return path or "/"


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on an absolute path: `.` segments vanish, `..` removes the one before it."""
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if segment == ".":
            if i == len(segments) - 1:
                out.append("")
            continue
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
            continue
        out.append(segment)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result
