"""Operational log lines that a client cannot shape: one line per record, control characters
escaped, bounded in length. Tool names, paths and subjects come from requests; without this a
tool named "x\\n… decision allow" would print a line that reads like a decision."""

from __future__ import annotations

import logging

MAX_MESSAGE_CHARS = 2000
_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f",
                                                      0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\x85"}


def escape(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, printable, at most `limit` characters (then an ellipsis and the cut count)."""
    cleaned = text.translate(_ESCAPES)
    if len(cleaned) > limit:
        return f"{cleaned[:limit]}… [{len(cleaned) - limit} more characters]"
    return cleaned


class SafeFormatter(logging.Formatter):
    """Escapes and bounds the message of every record (tracebacks of agentgov's own errors, added by
    `log.exception`, keep their lines: they are written by agentgov, not by a client)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        return super().formatMessage(record)


def configure(label: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(f"%(asctime)s {label} %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
