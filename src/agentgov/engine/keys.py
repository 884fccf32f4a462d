"""One wording for a document (a configuration section, a request) with keys it does not allow:
every section of agentgov.yaml, the bundle definition and the AuthZEN API say it the same way."""

from __future__ import annotations

from collections.abc import Collection, Iterable


def unknown_keys(keys: Iterable[object], allowed: Collection[str], prefix: str = "") -> str | None:
    """`unknown key(s) a, b` (each name after `prefix`), or None when every key is allowed."""
    unknown = sorted(str(k) for k in keys if k not in allowed)
    return f"unknown key(s) {', '.join(prefix + k for k in unknown)}" if unknown else None
