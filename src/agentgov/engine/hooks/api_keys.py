"""API-key identities for callers that cannot hold a JWT (batch jobs, service accounts).

Only SHA-256 digests are stored (in agentgov.yaml): a leaked config does not leak keys. Plain
SHA-256 without a salt is right here, unlike for passwords: keys are 256-bit random strings made
by `agentgov api-key`, so there is nothing to brute-force, and a fast hash keeps the hot path fast.
Looking the digest up in a dict is not a timing oracle: an attacker cannot steer the digest.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentgov.engine.keys import unknown_keys
from agentgov.engine.model import Subject

KEY_PREFIX = "agk_"
DEFAULT_API_KEY_HEADER = "x-api-key"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MIN_KEY_LENGTH = 32


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: str
    roles: tuple[str, ...] = ()
    tenant: str | None = None


def new_key() -> str:
    """A fresh key: 256 random bits, prefixed so secret scanners and humans recognise it."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyStore:
    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_digest: dict[str, ApiKey] = {}
        for k in keys:
            if k.sha256 in self._by_digest:
                raise ValueError(f"api key {k.id}: the same key digest is listed twice")
            self._by_digest[k.sha256] = k

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, key: str, header: str) -> Subject | None:
        """The subject for `key`, which arrived in `header` (recorded so the key is not forwarded)."""
        if len(key) < MIN_KEY_LENGTH:
            return None
        found = self._by_digest.get(digest(key))
        if found is None:
            return None
        return Subject(id=found.id, roles=found.roles, tenant=found.tenant,
                       claims={"auth": "api_key", "key_id": found.id, "credential_header": header},
                       authenticated=True)


def api_keys_from_config(doc: Any) -> list[ApiKey]:
    """`identity.api_keys`: [{id, sha256, roles?, tenant?}]. A raw `key` is refused, not hashed for you."""
    if not isinstance(doc, list):
        raise ValueError("identity.api_keys must be a list")
    out: list[ApiKey] = []
    for i, item in enumerate(doc):
        if not isinstance(item, Mapping):
            raise ValueError(f"identity.api_keys[{i}] must be a mapping")
        if "key" in item:
            raise ValueError(f"identity.api_keys[{i}]: store the key's sha256, never the key itself "
                             "(`agentgov api-key` prints both)")
        problem = unknown_keys(item, {"id", "sha256", "roles", "tenant"})
        if problem:
            raise ValueError(f"identity.api_keys[{i}]: {problem}")
        key_id, sha = item.get("id"), str(item.get("sha256", "")).lower()
        if not isinstance(key_id, str) or not key_id:
            raise ValueError(f"identity.api_keys[{i}]: `id` (the subject) is required")
        if not _HEX64.match(sha):
            raise ValueError(f"identity.api_keys[{i}]: `sha256` must be 64 hex digits")
        roles = item.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValueError(f"identity.api_keys[{i}]: `roles` must be a list of strings")
        tenant = item.get("tenant")
        out.append(ApiKey(key_id, sha, tuple(roles), str(tenant) if tenant is not None else None))
    return out
