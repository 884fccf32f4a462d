"""Approve/deny links for notifications: signed (HMAC-SHA256 with a key the workers and the console
share) and expiring, so a link cannot be altered to another approval or verb, or used after its
time. A link only opens the console's confirmation page: the approver still signs in and decides
as themselves (separation of duties cannot be checked for an anonymous click)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from pathlib import Path

VERBS = ("approve", "deny")
MIN_KEY_BYTES = 32


class LinkKeyError(ValueError):
    pass


def load_link_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise LinkKeyError(f"approvals.links.key_file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise LinkKeyError(f"approvals.links.key_file {path}: the key must be at least {MIN_KEY_BYTES} bytes "
                           "(e.g. `head -c 48 /dev/urandom | base64 > FILE`)")
    return key


def _signature(key: bytes, approval_id: str, verb: str, expires: int) -> str:
    mac = hmac.new(key, f"agentgov-approval-link|{approval_id}|{verb}|{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


@dataclass(frozen=True)
class LinkSigner:
    key: bytes
    base_url: str  # the console's address, as approvers reach it
    ttl_s: float = 3600.0

    def link(self, approval_id: str, verb: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        return (f"{self.base_url.rstrip('/')}/approvals/{approval_id}/{verb}"
                f"?exp={expires}&sig={_signature(self.key, approval_id, verb, expires)}")


def link_problem(key: bytes, approval_id: str, verb: str, expires: str, signature: str,
                 now: float | None = None) -> str | None:
    """Why a link may not be used (None: it is genuine and current)."""
    if verb not in VERBS or not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
        return "not an approval link"
    expected = _signature(key, approval_id, verb, int(expires)).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
        return "the link's signature does not verify (altered, or signed with another key)"
    if int(expires) <= (time.time() if now is None else now):
        return "the link has expired"
    return None
