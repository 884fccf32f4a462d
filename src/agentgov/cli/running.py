"""Where a running `agentgov up` stack is, for `agentgov token`: one small file per user, written
when the stack is up and removed when it stops."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from agentgov.cli.stack import LocalStack

DEMO_KEY_FILE = "DEMO-ONLY-issuer-key.pem"  # signs for the demo issuer of one local stack, nothing else


def state_file() -> Path:
    return Path(tempfile.gettempdir()) / f"agentgov-up-{os.getuid()}.json"


def write_running(stack: LocalStack) -> None:
    state_file().write_text(json.dumps({"workdir": str(stack.workdir), "url": stack.url, "pid": os.getpid()}))


def forget_running(stack: LocalStack) -> None:
    path = state_file()
    try:
        if json.loads(path.read_text()).get("workdir") == str(stack.workdir):
            path.unlink()
    except (OSError, ValueError):
        pass


def read_running() -> dict[str, Any] | None:
    """The running stack's state, or None when none is up (the file is missing or its process gone)."""
    try:
        doc: dict[str, Any] = json.loads(state_file().read_text())
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc
