"""Pieces every JSON-or-stream response processor needs: which kind of answer this is, and complete
server-sent events out of the bytes received so far."""

from __future__ import annotations

from collections.abc import Mapping


class JsonOrEventStream:
    """A response processor for 2xx JSON answers (asked of Envoy whole) and event streams (judged
    as they flow)."""

    _streaming = False

    def on_headers(self, status: int, headers: Mapping[str, str]) -> bool:
        content_type = headers.get("content-type", "").lower()
        self._streaming = "text/event-stream" in content_type
        return 200 <= status < 300 and (self._streaming or "json" in content_type)

    @property
    def wants_buffering(self) -> bool:
        return not self._streaming


def complete_events(buffer: bytes, end_of_stream: bool) -> tuple[list[bytes], bytes]:
    """(the complete events in `buffer`, what is left of an event still arriving). At the end of the
    stream a last event without its blank line counts as complete."""
    *events, rest = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
    if end_of_stream and rest.strip():
        events, rest = [*events, rest], b""
    return events, rest
