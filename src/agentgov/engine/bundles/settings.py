"""`policy.bundle` and `policy.shadow` in agentgov.yaml: where a bundle comes from, how often to
poll, where to keep the last good copy, and the keys its signature must verify with.

    policy:
      bundle:
        source: https://bundles.example.com/bundles/agentgov.tar.gz   # or oci://…, a .tar.gz, a folder
        token_env: BUNDLE_TOKEN          # bearer token for an HTTP source (or token_file)
        insecure: false                  # OCI registry over plain HTTP
        poll_min_s: 10                   # jittered polling between these bounds
        poll_max_s: 20
        persist_dir: .agentgov/bundles   # the last good bundle, served when the source is down at start-up
        verification:                    # with keys, an unsigned or badly signed bundle is refused
          key_id: default                # the key to use (default: the signature's kid, else its keyid)
          scope: ""
          keys:
            default: {key_file: keys/bundle.pub.pem, algorithm: RS256}   # or key_env: NAME
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgov.engine.keys import unknown_keys

if TYPE_CHECKING:
    from agentgov.engine.bundles.signing import VerificationKey

_KEYS = {"source", "token_env", "token_file", "insecure", "poll_min_s", "poll_max_s", "persist_dir", "verification"}
_VERIFICATION = {"key_id", "scope", "keys"}
_KEY = {"key_file", "key_env", "algorithm", "scope"}
DEFAULT_PERSIST_DIR = ".agentgov/bundles"


@dataclass(frozen=True)
class ReloadSettings:
    """How a bundle source is polled and what a bundle from it must carry (signatures)."""

    poll_min_s: float = 10.0
    poll_max_s: float = 20.0
    keys: Mapping[str, VerificationKey] | None = None  # with keys, unsigned or badly signed bundles are refused
    key_id: str = ""
    scope: str = ""
    persist_dir: Path | None = None


class BundleConfigError(ValueError):
    pass


@dataclass(frozen=True)
class BundleSettings:
    source: str
    token: str = ""
    insecure: bool = False
    reload: ReloadSettings = field(default_factory=ReloadSettings)


def _unknown(doc: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    problem = unknown_keys(doc, allowed, prefix)
    if problem:
        raise BundleConfigError(problem)


def _number(doc: Mapping[str, Any], key: str, default: float, prefix: str) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise BundleConfigError(f"{prefix}{key} must be a positive number of seconds")
    return float(value)


def bundle_settings(doc: Any, base: Path, name: str) -> BundleSettings:
    """The section `policy.<name>` (a mapping, or just the source as a string)."""
    prefix = f"policy.{name}."
    if isinstance(doc, str):
        doc = {"source": doc}
    if not isinstance(doc, Mapping):
        raise BundleConfigError(f"policy.{name} must be a mapping (or a source string)")
    _unknown(doc, _KEYS, prefix)
    source = doc.get("source")
    if not isinstance(source, str) or not source:
        raise BundleConfigError(f"{prefix}source is required: oci://…, http(s)://…, a .tar.gz bundle or a folder")
    low, high = _number(doc, "poll_min_s", 10.0, prefix), _number(doc, "poll_max_s", 20.0, prefix)
    if high < low:
        raise BundleConfigError(f"{prefix}poll_max_s must not be below poll_min_s")
    insecure = doc.get("insecure", False)
    if not isinstance(insecure, bool):
        raise BundleConfigError(f"{prefix}insecure must be true or false")
    persist = doc.get("persist_dir", DEFAULT_PERSIST_DIR)
    if not isinstance(persist, str):
        raise BundleConfigError(f"{prefix}persist_dir must be a path")
    keys, key_id, scope = _verification(doc.get("verification"), base, prefix + "verification.")
    return BundleSettings(source, _token(doc, base, prefix), insecure,
                          ReloadSettings(low, high, keys, key_id, scope, (base / persist) if persist else None))


def _token(doc: Mapping[str, Any], base: Path, prefix: str) -> str:
    if doc.get("token_env") and doc.get("token_file"):
        raise BundleConfigError(f"{prefix}token_env and {prefix}token_file: set one")
    if doc.get("token_env"):
        value = os.environ.get(str(doc["token_env"]))
        if not value:
            raise BundleConfigError(f"{prefix}token_env: environment variable {doc['token_env']} is not set")
        return value.strip()
    if doc.get("token_file"):
        try:
            return (base / str(doc["token_file"])).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BundleConfigError(f"{prefix}token_file: {doc['token_file']}: {exc.strerror}") from None
    return ""


def _verification(doc: Any, base: Path, prefix: str) -> tuple[dict[str, VerificationKey] | None, str, str]:
    if doc is None:
        return None, "", ""
    # The signing module brings PyJWT and cryptography (~50 ms to import): only for configured keys.
    from agentgov.engine.bundles.signing import ALGORITHMS, VerificationKey

    if not isinstance(doc, Mapping):
        raise BundleConfigError(f"{prefix.rstrip('.')} must be a mapping")
    _unknown(doc, _VERIFICATION, prefix)
    entries = doc.get("keys")
    if not isinstance(entries, Mapping) or not entries:
        raise BundleConfigError(f"{prefix}keys must map key ids to {{key_file|key_env, algorithm}}")
    keys: dict[str, VerificationKey] = {}
    for key_id, entry in entries.items():
        where = f"{prefix}keys.{key_id}."
        if not isinstance(entry, Mapping):
            raise BundleConfigError(f"{where.rstrip('.')} must be a mapping")
        _unknown(entry, _KEY, where)
        algorithm = str(entry.get("algorithm", "RS256"))
        if algorithm not in ALGORITHMS:
            raise BundleConfigError(f"{where}algorithm must be one of {', '.join(ALGORITHMS)}")
        keys[str(key_id)] = VerificationKey(_key_material(entry, base, where), algorithm, str(entry.get("scope", "")))
    key_id = str(doc.get("key_id", ""))
    if key_id and key_id not in keys:
        raise BundleConfigError(f"{prefix}key_id {key_id!r} is not one of the configured keys")
    return keys, key_id, str(doc.get("scope", ""))


def _key_material(entry: Mapping[str, Any], base: Path, where: str) -> bytes:
    if bool(entry.get("key_file")) == bool(entry.get("key_env")):
        raise BundleConfigError(f"{where}: set one of key_file (a PEM public key or certificate) or key_env")
    if entry.get("key_env"):
        value = os.environ.get(str(entry["key_env"]))
        if not value:
            raise BundleConfigError(f"{where}key_env: environment variable {entry['key_env']} is not set")
        return value.encode()
    try:
        return (base / str(entry["key_file"])).read_bytes()
    except OSError as exc:
        raise BundleConfigError(f"{where}key_file: {entry['key_file']}: {exc.strerror}") from None
