"""Operational log lines that a client cannot shape: one JSON object per line (time, level, process,
logger, message), control characters escaped, messages bounded in length. Tool names, paths and
subjects come from requests; without this a tool named "x\\n… decision allow" would print a line
that reads like a decision. Decisions themselves are not logged here: the audit log is their record."""

from __future__ import annotations

import json
import logging
import time

MAX_MESSAGE_CHARS = 2000
_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f",
                                                      0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\x85"}


def escape(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, printable, at most `limit` characters (then an ellipsis and the cut count)."""
    cleaned = text.translate(_ESCAPES)
    if len(cleaned) > limit:
        return f"{cleaned[:limit]}… [{len(cleaned) - limit} more characters]"
    return cleaned


class JsonFormatter(logging.Formatter):
    """One JSON object per record. A traceback (agentgov's own errors, from `log.exception`) goes in
    an `exception` field, escaped like the message: still one line."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "process": self.process, "logger": record.name,
               "message": escape(record.getMessage())}
        if record.exc_info:
            doc["exception"] = escape(self.formatException(record.exc_info), 8000)
        return json.dumps(doc, ensure_ascii=False)


def configure(process: str, level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
