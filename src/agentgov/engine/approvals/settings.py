"""The `approvals:` section of agentgov.yaml (a contract: docs/approvals.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentgov.engine.keys import unknown_keys

_KEYS = {"store", "default_ttl_s", "pending_ttl_s", "wait_s", "bind_revision", "status_url"}
STATUS_PATH = "/approvals/v1/"
DEFAULT_STATUS_URL = STATUS_PATH + "{id}"  # relative: served by agentgov's HTTP door


class ApprovalsConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ApprovalSettings:
    store: str = "sqlite"
    default_ttl_s: float = 900.0  # how long a given approval serves its uses, when the policy says not
    pending_ttl_s: float = 86400.0  # how long a request waits for a decision before it expires
    wait_s: float = 0.0  # hold the call open this long for a decision (0: answer at once)
    bind_revision: bool = True  # an approval serves only the policy revision that asked for it
    # Where a caller asks how its approval stands; `{id}` is the approval id. The default is relative
    # to agentgov's HTTP door; a deployment that exposes it elsewhere writes the absolute URL.
    status_url: str = DEFAULT_STATUS_URL

    def status_url_for(self, approval_id: str) -> str:
        return self.status_url.replace("{id}", approval_id)


def settings_from_config(doc: Mapping[str, Any]) -> ApprovalSettings:
    problem = unknown_keys(doc, _KEYS, "approvals.")
    if problem:
        raise ApprovalsConfigError(problem)
    store = str(doc.get("store", "sqlite"))
    if not (store == "sqlite" or store.startswith(("sqlite:///", "redis://", "rediss://"))):
        raise ApprovalsConfigError("approvals.store must be sqlite, sqlite:///PATH or redis://host:port/db")
    numbers: dict[str, float] = {}
    for key, default, low in (("default_ttl_s", 900.0, 1.0), ("pending_ttl_s", 86400.0, 1.0), ("wait_s", 0.0, 0.0)):
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low or value > 30 * 86400:
            raise ApprovalsConfigError(f"approvals.{key} must be a number of seconds from {low:g} to 30 days")
        numbers[key] = float(value)
    if numbers["wait_s"] > 60:
        raise ApprovalsConfigError("approvals.wait_s must be at most 60 (a held call keeps a connection open)")
    bind = doc.get("bind_revision", True)
    if not isinstance(bind, bool):
        raise ApprovalsConfigError("approvals.bind_revision must be true or false")
    status_url = doc.get("status_url", DEFAULT_STATUS_URL)
    if not isinstance(status_url, str) or status_url.count("{id}") != 1 or any(c.isspace() for c in status_url) \
            or not status_url.startswith(("/", "http://", "https://")):
        raise ApprovalsConfigError("approvals.status_url must be a path or an http(s) URL containing {id} once, "
                                   "e.g. https://agentgov.example.com/approvals/v1/{id}")
    return ApprovalSettings(store, numbers["default_ttl_s"], numbers["pending_ttl_s"], numbers["wait_s"], bind,
                            status_url)
