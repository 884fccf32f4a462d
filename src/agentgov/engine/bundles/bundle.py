"""Build, load and sign whole bundles: the functions the CLI and the policy loader call."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgov.engine.bundles.archive import MANIFEST, SIGNATURES, bundle_error, read_archive, write_archive
from agentgov.engine.bundles.contents import Manifest, bundle_sources, collect, content_revision, owned_roots
from agentgov.engine.policy.sources import PolicySources

if TYPE_CHECKING:
    from agentgov.engine.bundles.signing import VerificationKey

# The signing module (PyJWT, cryptography: ~50 ms to import) is loaded only to sign or verify: policy
# discovery goes through this module on every `check`, `test` and `eval`.


@dataclass(frozen=True)
class LoadedBundle:
    sources: PolicySources
    manifest: Manifest | None
    digest: str          # sha256 of the archive bytes: the identity decisions and audit records carry
    signed_by: str       # the key id that verified it, or "" when no keys were configured


def build_bundle(roots: Iterable[Path], *, revision: str = "", bundle_roots: tuple[str, ...] = (),
                 metadata: Mapping[str, Any] | None = None, include_tests: bool = False) -> bytes:
    """A deterministic OPA bundle of the policy folders `roots`. The manifest's roots default to
    what the policies own; the revision defaults to a digest of the content."""
    roots = list(roots)
    files = collect(roots, include_tests=include_tests)
    if not files:
        raise bundle_error(", ".join(map(str, roots)), "no Rego, data or Cedar files to bundle")
    owned = bundle_roots or owned_roots(files)
    manifest = Manifest(revision or content_revision(files), owned, 1, metadata)
    files[MANIFEST] = manifest.to_json()
    return write_archive(files)


def load_bundle(path: Path, keys: Mapping[str, VerificationKey] | None = None, *, key_id: str = "",
                scope: str = "") -> LoadedBundle:
    """Read, verify (when keys are given) and parse a bundle file. Never a partial load."""
    return open_bundle(_read(path), str(path), keys, key_id=key_id, scope=scope)


def open_bundle(blob: bytes, where: str, keys: Mapping[str, VerificationKey] | None = None, *,
                key_id: str = "", scope: str = "") -> LoadedBundle:
    """Read, verify (when keys are given) and parse bundle bytes, however they arrived."""
    files = read_archive(blob, where)
    signed_by = ""
    if keys:
        from agentgov.engine.bundles.signing import verify

        signed_by = verify(files, keys, key_id=key_id, scope=scope, where=where)
    sources, manifest = bundle_sources(files, where)
    return LoadedBundle(sources, manifest, hashlib.sha256(blob).hexdigest(), signed_by)


def sign_bundle(blob: bytes, key: bytes, algorithm: str, *, key_id: str = "", scope: str = "",
                where: str = "bundle") -> bytes:
    """The same bundle with a (new) `.signatures.json`; deterministic for deterministic signatures
    (RSA PKCS#1 v1.5 and HMAC; ECDSA signatures are randomised by design)."""
    from agentgov.engine.bundles.signing import sign

    files = read_archive(blob, where)
    files.pop(SIGNATURES, None)
    files[SIGNATURES] = sign(files, key, algorithm, key_id=key_id, scope=scope)
    return write_archive(files)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise bundle_error(str(path), f"cannot read bundle: {exc.strerror or exc}") from None
