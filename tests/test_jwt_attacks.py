"""The JWT attack suite: every known way to get a forged or misused token past a verifier, each
refused with its reason (reliability suite; docs/reliability.md lists them with their outcomes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from agentgov.cli.stack import DEMO_AUDIENCE, DEMO_ISSUER, DEMO_KID, DemoKeys
from agentgov.engine.hooks.identity import MAX_TOKEN_CHARS, IdentityError, IdentityVerifier, Issuer

pytestmark = pytest.mark.reliability
EC_KID = "ec-1"


def _b64(data: bytes | dict[str, Any]) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys() -> DemoKeys:
    return DemoKeys()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def verifier(tmp_path: Path, keys: DemoKeys, ec_key: ec.EllipticCurvePrivateKey) -> IdentityVerifier:
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    jwks = {"keys": [*keys.jwks()["keys"], {**ec_jwk, "kid": EC_KID, "alg": "ES256", "use": "sig"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    return IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), algorithms=("RS256", "ES256"),
                                    jwks_file=str(tmp_path / "jwks.json"))], leeway_s=0)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "alice", "roles": ["analyst"], "tenant": "acme",
            "iat": now, "exp": now + 600, **overrides}


def _refused(verifier: IdentityVerifier, token: str) -> str:
    with pytest.raises(IdentityError) as err:
        verifier.verify(token)
    return err.value.reason


def test_a_good_token_of_each_algorithm_is_accepted(verifier: IdentityVerifier, keys: DemoKeys,
                                                   ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert verifier.verify(keys.token("alice", ["analyst"], "acme")).id == "alice"
    es = jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": EC_KID})
    assert verifier.verify(es).roles == ("analyst",)


def test_alg_none_is_refused(verifier: IdentityVerifier) -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': DEMO_KID})}.{_b64(_claims(roles=['admin']))}."
    assert _refused(verifier, token) == "invalid_algorithm"


def test_key_confusion_hs256_signed_with_the_public_key_is_refused(verifier: IdentityVerifier, keys: DemoKeys) -> None:
    header, payload = _b64({"alg": "HS256", "typ": "JWT", "kid": DEMO_KID}), _b64(_claims(roles=["admin"]))
    signature = hmac.new(keys.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert _refused(verifier, f"{header}.{payload}.{_b64(signature)}") == "invalid_algorithm"


def test_an_rs256_kid_with_an_es256_token_is_refused(verifier: IdentityVerifier,
                                                      ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": DEMO_KID})
    assert _refused(verifier, token) == "invalid_algorithm"


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"exp": int(time.time()) - 5}, "token_expired"),
    ({"nbf": int(time.time()) + 3600}, "token_not_yet_valid"),
    ({"aud": "someone-else"}, "invalid_audience"),
    ({"iss": "https://evil.example"}, "invalid_issuer"),
    ({"exp": None}, "invalid_token"),
    ({"sub": ""}, "invalid_token"),
    ({"roles": {"admin": True}}, "invalid_token"),
])
def test_bad_claims_are_refused(verifier: IdentityVerifier, keys: DemoKeys, overrides: dict[str, Any],
                                reason: str) -> None:
    claims = {k: v for k, v in _claims(**overrides).items() if v is not None}
    token = jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": DEMO_KID})
    assert _refused(verifier, token) == reason


def test_an_unknown_kid_is_refused(verifier: IdentityVerifier, keys: DemoKeys) -> None:
    token = jwt.encode(_claims(), keys.private_key, algorithm="RS256", headers={"kid": "not-in-the-jwks"})
    assert _refused(verifier, token) == "unknown_key"


@pytest.mark.parametrize("header", [
    "jwk",  # the attacker's own public key, embedded: never used to verify
    "jku",  # a URL to the attacker's JWKS: never fetched
    "x5u",
])
def test_keys_offered_by_the_token_itself_are_never_used(verifier: IdentityVerifier, header: str) -> None:
    attacker = rsa.generate_private_key(65537, 2048)
    offered = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    extra: dict[str, Any] = {"jwk": offered} if header == "jwk" else {header: "https://evil.example/jwks.json"}
    token = jwt.encode(_claims(roles=["admin"]), attacker, algorithm="RS256", headers={"kid": DEMO_KID, **extra})
    assert _refused(verifier, token) == "invalid_token"  # the signature does not verify with the issuer's key


def test_an_oversized_token_is_refused_before_it_is_parsed(verifier: IdentityVerifier, keys: DemoKeys) -> None:
    token = keys.token("alice", ["analyst"] * 3000, "acme")
    assert len(token) > MAX_TOKEN_CHARS
    assert _refused(verifier, token) == "invalid_token"


@pytest.mark.parametrize("where", ["payload", "header"])
def test_a_token_that_repeats_a_key_is_refused(verifier: IdentityVerifier, keys: DemoKeys, where: str) -> None:
    """PyJWT reads the last `roles`, other libraries the first: one token, two readings."""
    claims = json.dumps(_claims())[:-1] + ', "roles": ["admin"]}'
    header = json.dumps({"alg": "RS256", "typ": "JWT", "kid": DEMO_KID})
    if where == "header":
        header = header[:-1] + ', "kid": "other"}'
    signing_input = f"{_b64(header.encode())}.{_b64(claims.encode())}"
    signature = keys.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert _refused(verifier, f"{signing_input}.{_b64(signature)}") == "invalid_token"


def test_psychic_ecdsa_signatures_are_refused(verifier: IdentityVerifier) -> None:
    """CVE-2022-21449: an ECDSA signature with r = s = 0 verified in some JDKs."""
    signing_input = f"{_b64({'alg': 'ES256', 'typ': 'JWT', 'kid': EC_KID})}.{_b64(_claims(roles=['admin']))}"
    for signature in (b"\x00" * 64, b"\x00" * 32 + b"\x01" + b"\x00" * 31):
        assert _refused(verifier, f"{signing_input}.{_b64(signature)}") == "invalid_token"


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.***.???", "e30.e30.", "eyJhbGciOiJSUzI1NiJ9..x"])
def test_garbage_is_refused_never_a_crash(verifier: IdentityVerifier, token: str) -> None:
    with pytest.raises(IdentityError):
        verifier.verify_header(f"Bearer {token}")
