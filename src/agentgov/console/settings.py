"""The `console:` section of agentgov.yaml (a contract: docs/console.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentgov.engine.keys import unknown_keys

_KEYS = {"port", "host", "admin_role", "session_ttl_s", "secure_cookie"}


class ConsoleConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ConsoleSettings:
    port: int
    host: str = "127.0.0.1"  # loopback unless a deployment says otherwise: the console is an admin door
    admin_role: str = "admin"  # the role a person needs to sign in
    session_ttl_s: float = 3600.0
    secure_cookie: bool = False  # set behind TLS: the session cookie is then sent over HTTPS only


def console_settings(doc: Mapping[str, Any]) -> ConsoleSettings:
    problem = unknown_keys(doc, _KEYS, "console.")
    if problem:
        raise ConsoleConfigError(problem)
    port = doc.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConsoleConfigError("console.port must be a port number (0: any free port)")
    host = doc.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConsoleConfigError("console.host must be an address to listen on")
    role = doc.get("admin_role", "admin")
    if not isinstance(role, str) or not role:
        raise ConsoleConfigError("console.admin_role must be a role name")
    ttl = doc.get("session_ttl_s", 3600)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 60 <= ttl <= 86400:
        raise ConsoleConfigError("console.session_ttl_s must be from 60 to 86400 seconds")
    secure = doc.get("secure_cookie", False)
    if not isinstance(secure, bool):
        raise ConsoleConfigError("console.secure_cookie must be true or false")
    return ConsoleSettings(port, host, role, float(ttl), secure)
