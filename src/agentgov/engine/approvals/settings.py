"""The `approvals:` section of agentgov.yaml (a contract: docs/approvals.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgov.engine.approvals.links import LinkSigner, load_link_key
from agentgov.engine.approvals.notify import FORMATS, Webhook
from agentgov.engine.keys import unknown_keys

_KEYS = {"store", "default_ttl_s", "pending_ttl_s", "wait_s", "bind_revision", "status_url", "webhooks", "links",
         "sweep_s"}
_WEBHOOK_KEYS = {"url", "format", "token_env"}
_LINK_KEYS = {"base_url", "key_file", "ttl_s"}
STATUS_PATH = "/approvals/v1/"
DEFAULT_STATUS_URL = STATUS_PATH + "{id}"  # relative: served by agentgov's HTTP door


class ApprovalsConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Links:
    base_url: str  # the console, as approvers reach it
    key_file: str  # the HMAC key the workers sign with and the console verifies with
    ttl_s: float = 3600.0


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
    webhooks: tuple[Webhook, ...] = ()  # told of each new request (docs/approvals.md)
    links: Links | None = None  # signed approve/deny links in the notifications, to the console
    sweep_s: float = 30.0  # how often a worker marks (and records) the approvals past their time

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
    for key, default, low in (("default_ttl_s", 900.0, 1.0), ("pending_ttl_s", 86400.0, 1.0), ("wait_s", 0.0, 0.0),
                              ("sweep_s", 30.0, 0.1)):
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
                            status_url, _webhooks(doc.get("webhooks", [])), _links(doc.get("links")),
                            numbers["sweep_s"])


def _webhooks(items: Any) -> tuple[Webhook, ...]:
    if not isinstance(items, list):
        raise ApprovalsConfigError("approvals.webhooks must be a list of {url, format, token_env}")
    out = []
    for i, item in enumerate(items):
        where = f"approvals.webhooks[{i}]"
        if not isinstance(item, dict):
            raise ApprovalsConfigError(f"{where} must be a mapping with url, format, token_env")
        problem = unknown_keys(item, _WEBHOOK_KEYS, where + ".")
        if problem:
            raise ApprovalsConfigError(problem)
        url, fmt, token_env = item.get("url"), item.get("format", "json"), item.get("token_env", "")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
            raise ApprovalsConfigError(f"{where}.url must be an http(s) URL")
        if fmt not in FORMATS:
            raise ApprovalsConfigError(f"{where}.format must be one of {', '.join(FORMATS)}")
        if not isinstance(token_env, str) or (token_env and not token_env.replace("_", "").isalnum()):
            raise ApprovalsConfigError(f"{where}.token_env must be the name of an environment variable")
        out.append(Webhook(url, fmt, token_env))
    return tuple(out)


def _links(doc: Any) -> Links | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ApprovalsConfigError("approvals.links must be a mapping with base_url, key_file, ttl_s")
    problem = unknown_keys(doc, _LINK_KEYS, "approvals.links.")
    if problem:
        raise ApprovalsConfigError(problem)
    base, key_file, ttl = doc.get("base_url"), doc.get("key_file"), doc.get("ttl_s", 3600)
    if not isinstance(base, str) or not base.startswith(("http://", "https://")) or any(c.isspace() for c in base):
        raise ApprovalsConfigError("approvals.links.base_url must be the console's http(s) address")
    if not isinstance(key_file, str) or not key_file:
        raise ApprovalsConfigError("approvals.links.key_file must name the file holding the links' signing key")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 60 <= ttl <= 7 * 86400:
        raise ApprovalsConfigError("approvals.links.ttl_s must be from 60 seconds to 7 days")
    return Links(base, key_file, float(ttl))


def link_key_path(links: Links, base: Path) -> Path:
    path = Path(links.key_file)
    return path if path.is_absolute() else base / path


def link_signer(settings: ApprovalSettings, base: Path) -> LinkSigner | None:
    """The signer of approve/deny links (None without `approvals.links`); a missing or short key is a
    LinkKeyError, refused at start-up."""
    if settings.links is None:
        return None
    return LinkSigner(load_link_key(link_key_path(settings.links, base)), settings.links.base_url,
                      settings.links.ttl_s)
