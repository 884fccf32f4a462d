"""OPA's bundle signatures (`.signatures.json`): sign and verify, interoperable with
`opa build --signing-key` and `opa run --verification-key`.

The signature is one compact JWS whose payload lists every file with its digest
(`{"files": [{"name", "hash", "algorithm"}], "keyid"?, "scope"?}`). Verification follows OPA:
the key is chosen by the configured id, else the token's `kid`, else the payload's `keyid`; the
algorithm comes from the key's configuration, never from the token (no algorithm confusion);
the scope must match; every file in the bundle must be listed with a matching digest, and every
listed file must be present.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from agentgov.engine.bundles.archive import SIGNATURES, bundle_error
from agentgov.engine.bundles.hashing import HASH_ALGORITHMS, file_digest

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "HS256", "HS384", "HS512")


@dataclass(frozen=True)
class VerificationKey:
    """One entry of OPA's `keys:` configuration: key material, algorithm, optional scope."""

    key: bytes
    algorithm: str = "RS256"
    scope: str = ""


def key_material(value: str) -> bytes:
    """A key given on the command line: a file path, `env:NAME`, or (HMAC only) the secret itself,
    as `opa build --signing-key` takes it."""
    if value.startswith("env:"):
        found = os.environ.get(value[4:])
        if found is None:
            raise bundle_error("key", f"environment variable {value[4:]} is not set")
        return found.encode()
    path = Path(value)
    if path.is_file():
        return path.read_bytes()
    return value.encode()


def sign(files: Mapping[str, bytes], key: bytes, algorithm: str = "RS256", *, key_id: str = "",
         scope: str = "") -> bytes:
    """The `.signatures.json` content for `files` (any existing signature file is not signed)."""
    if algorithm not in ALGORITHMS:
        raise bundle_error("signing", f"unsupported algorithm {algorithm}; use one of {', '.join(ALGORITHMS)}")
    listed = [{"name": name, "hash": file_digest(name, content), "algorithm": "SHA-256"}
              for name, content in sorted(files.items()) if name != SIGNATURES]
    payload: dict[str, Any] = {"files": listed}
    if key_id:
        payload["keyid"] = key_id
    if scope:
        payload["scope"] = scope
    signing_key = key if algorithm.startswith("HS") else _private_key(key, algorithm)
    try:
        token = jwt.api_jws.encode(json.dumps(payload, separators=(",", ":")).encode(), signing_key,
                                   algorithm=algorithm, headers={"kid": key_id} if key_id else None)
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise bundle_error("signing", f"cannot sign with this key and {algorithm}: {exc}") from None
    return json.dumps({"signatures": [token]}, indent=1).encode()


def verify(files: Mapping[str, bytes], keys: Mapping[str, VerificationKey], *, key_id: str = "",
           scope: str = "", where: str = "bundle") -> str:
    """Check `files` against their `.signatures.json`; returns the key id that verified it.
    Raises PolicyLoadError (code bundle_error) naming the first problem."""
    raw = files.get(SIGNATURES)
    if raw is None:
        raise bundle_error(where, "the bundle is not signed (.signatures.json is missing) and verification "
                           "keys are configured")
    try:
        doc = json.loads(raw)
        tokens = doc["signatures"]
    except (ValueError, KeyError, TypeError):
        raise bundle_error(where, ".signatures.json: not an object with a `signatures` list") from None
    if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
        raise bundle_error(where, ".signatures.json: expected exactly one JWT")
    token = tokens[0]
    try:
        header = jwt.get_unverified_header(token)
        unverified = json.loads(jwt.api_jws.decode_complete(token, options={"verify_signature": False})["payload"])
    except (jwt.PyJWTError, ValueError) as exc:
        raise bundle_error(where, f".signatures.json: malformed JWT: {exc}") from None
    if not isinstance(unverified, dict):
        raise bundle_error(where, ".signatures.json: the JWT payload is not an object")
    chosen = key_id or _str(header.get("kid")) or _str(unverified.get("keyid"))
    if not chosen:
        raise bundle_error(where, "verification key ID is empty (no configured id, no kid, no keyid claim)")
    config = keys.get(chosen)
    if config is None:
        raise bundle_error(where, f"verification key {chosen!r} is not configured")
    try:
        verified = jwt.api_jws.decode_complete(token, _public_key(config), algorithms=[config.algorithm])
        payload = json.loads(verified["payload"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise bundle_error(where, f"signature does not verify with key {chosen!r} ({config.algorithm}): {exc}") \
            from None
    expected_scope = scope or config.scope
    if _str(payload.get("scope")) != expected_scope:
        raise bundle_error(where, "scope mismatch")
    _check_files(files, payload.get("files"), where)
    return chosen


def _check_files(files: Mapping[str, bytes], listed: Any, where: str) -> None:
    if not isinstance(listed, list):
        raise bundle_error(where, "the signature lists no files")
    expected: dict[str, tuple[str, str]] = {}
    for entry in listed:
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("name", "hash", "algorithm"))):
            raise bundle_error(where, "a file entry in the signature lacks name, hash or algorithm")
        expected[entry["name"].lstrip("/")] = (entry["hash"].lower(), entry["algorithm"])
    for name, content in sorted(files.items()):
        if name == SIGNATURES:
            continue
        if name not in expected:
            raise bundle_error(where, f"{name}: not included in the bundle signature")
        digest, algorithm = expected.pop(name)
        if algorithm not in HASH_ALGORITHMS:
            raise bundle_error(where, f"{name}: hashing algorithm {algorithm!r} is not accepted")
        try:
            actual = file_digest(name, content, algorithm)
        except ValueError as exc:
            raise bundle_error(where, f"{name}: cannot be hashed: {exc}") from None
        if actual != digest:
            raise bundle_error(where, f"{name}: digest mismatch (signed {digest[:16]}…, found {actual[:16]}…)")
    if expected:
        raise bundle_error(where, f"file(s) {sorted(expected)} are in the signature but not in the bundle")


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# What each algorithm family signs with (OPA verifies exactly these: it has no EdDSA for bundles).
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def _private_key(pem: bytes, algorithm: str) -> Any:
    if b"-----BEGIN" not in pem:
        raise bundle_error("signing", "the signing key is not an unencrypted PEM private key (no PEM text at all: give "
                           "a path, or env:NAME holding PEM); `agentgov keygen --for bundle` makes one")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise bundle_error("signing", f"the signing key is not an unencrypted PEM private key: {exc}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise bundle_error("signing", f"this is an Ed25519/Ed448 key (the kind that signs audit checkpoints); bundle "
                           f"signatures are RSA (RS*/PS*), EC (ES*) or HMAC (HS*), which OPA verifies, and {algorithm} "
                           "needs " + _needs(algorithm) + ": `agentgov keygen --for bundle` makes one")
    if algorithm.startswith(("RS", "PS")) and not isinstance(key, rsa.RSAPrivateKey):
        raise bundle_error("signing", f"{algorithm} signs with an RSA key, and this is not one: use --signing-alg "
                           "ES256 for an EC key, or `agentgov keygen --for bundle --signing-alg RS256`")
    if algorithm.startswith("ES"):
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise bundle_error("signing", f"{algorithm} signs with an EC key, and this is not one: use --signing-alg "
                               "RS256 for an RSA key")
        if key.curve.name != _CURVES[algorithm]:
            raise bundle_error("signing", f"{algorithm} needs a {_CURVES[algorithm]} key; this one is "
                               f"{key.curve.name}")
    return key


def _needs(algorithm: str) -> str:
    return "an RSA key" if algorithm.startswith(("RS", "PS")) else f"a {_CURVES[algorithm]} EC key" \
        if algorithm in _CURVES else "a shared secret"


def _public_key(config: VerificationKey) -> Any:
    """PEM public key, certificate, or private key (its public half), as OPA accepts them."""
    if config.algorithm.startswith("HS"):
        return config.key
    try:
        if b"CERTIFICATE" in config.key:
            return x509.load_pem_x509_certificate(config.key).public_key()
        if b"PRIVATE KEY" in config.key:
            private = serialization.load_pem_private_key(config.key, password=None)
            if isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                return private.public_key()
            raise ValueError("not an RSA or EC key")
        return serialization.load_pem_public_key(config.key)
    except (ValueError, TypeError) as exc:
        raise bundle_error("verification", f"the verification key is not a PEM public key, certificate or "
                           f"private key: {exc}") from None
