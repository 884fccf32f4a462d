"""What an approval is bound to: the subject, the tenant, the action, a canonical hash of the
arguments and the policy revision. Key order, number spelling (`1e2`, `100`, `100.0`) and whitespace
do not change the hash; any change of a value does."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _normal(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return str(value)


def canonical_arguments(arguments: Mapping[str, Any]) -> str:
    """One spelling of the arguments: sorted keys, no whitespace, integral numbers as integers."""
    return json.dumps(_normal(arguments), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def argument_hash(arguments: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_arguments(arguments).encode()).hexdigest()


@dataclass(frozen=True)
class Binding:
    subject: str
    tenant: str
    kind: str
    name: str
    arguments_sha256: str
    revision: str  # "" when approvals are configured not to bind the policy revision

    @property
    def key(self) -> str:
        parts = [self.subject, self.tenant, self.kind, self.name, self.arguments_sha256, self.revision]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
