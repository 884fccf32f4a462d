"""The identity hook's promises: JWKS from a URL, refetched on an unknown kid but not more often
than the interval; an algorithm allow-list per issuer; claim mapping; a cache that ends at expiry."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentgov.cli.stack import DEMO_AUDIENCE, DEMO_ISSUER, DEMO_KID, DemoKeys
from agentgov.engine.hooks.identity import ClaimMapping, IdentityError, IdentityVerifier, Issuer
from agentgov.engine.model import Subject


class JwksServer:
    """A real HTTP server publishing a JWKS that the test can rotate, counting fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps(owner.jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def jwks_server() -> Iterator[tuple[JwksServer, DemoKeys]]:
    keys = DemoKeys()
    server = JwksServer(keys.jwks())
    yield server, keys
    server.close()


def _issuer(url: str, **kw: Any) -> Issuer:
    return Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_url=url, **kw)


def verify_async(verifier: IdentityVerifier, token: str) -> Subject:
    """As the identity hook verifies: an unknown kid may fetch the JWKS again, off the event loop."""
    return asyncio.run(verifier.verify_headers_async({"authorization": f"Bearer {token}"}))


def test_jwks_url_is_fetched_once_and_refetched_on_unknown_kid(jwks_server: tuple[JwksServer, DemoKeys]) -> None:
    server, keys = jwks_server
    verifier = IdentityVerifier([_issuer(server.url, refetch_interval_s=0.0)])
    assert server.fetches == 1
    assert verifier.verify(keys.token("alice", ["analyst"], "acme")).id == "alice"
    assert server.fetches == 1  # a known kid needs no fetch
    # Key rotation: the issuer publishes a new key; a token with the new kid triggers one refetch.
    rotated = DemoKeys()
    new_jwk = {**rotated.jwks()["keys"][0], "kid": "demo-key-2"}
    server.jwks = {"keys": [*keys.jwks()["keys"], new_jwk]}
    token = jwt.encode({"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "bob", "exp": int(time.time()) + 600},
                       rotated.private_key, algorithm="RS256", headers={"kid": "demo-key-2"})
    with pytest.raises(IdentityError) as err:
        verifier.verify(token)  # the synchronous path never touches the network
    assert (err.value.reason, server.fetches) == ("unknown_key", 1)
    assert verify_async(verifier, token).id == "bob"
    assert server.fetches == 2


def test_unknown_kid_refetches_at_most_once_per_interval(jwks_server: tuple[JwksServer, DemoKeys]) -> None:
    server, keys = jwks_server
    verifier = IdentityVerifier([_issuer(server.url, refetch_interval_s=3600)])
    claims = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "x", "exp": int(time.time()) + 600}
    for i in range(5):  # an attacker spraying random kids cannot make agentgov hammer the issuer
        token = jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": f"random-{i}"})
        with pytest.raises(IdentityError) as err:
            verify_async(verifier, token)
        assert err.value.reason == "unknown_key"
    assert server.fetches == 1


def test_unreachable_or_broken_jwks_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot load its JWKS from http://127.0.0.1:9/jwks.json"):
        IdentityVerifier([_issuer("http://127.0.0.1:9/jwks.json")])
    (tmp_path / "jwks.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot load its JWKS"):
        IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(tmp_path / "jwks.json"))])


def test_algorithm_allow_list_is_per_issuer(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())  # TEST KEY, generated per run
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ec-1"}]}))
    claims = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "svc", "exp": int(time.time()) + 600}
    token = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    rs_only = IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), ("RS256",), jwks_file=str(tmp_path / "jwks.json"))])
    with pytest.raises(IdentityError) as err:
        rs_only.verify(token)
    assert err.value.reason == "invalid_algorithm"
    es = IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), ("ES256",), jwks_file=str(tmp_path / "jwks.json"))])
    assert es.verify(token).id == "svc"
    # An RS256 header on the EC key: the key type must match the algorithm family.
    both = IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), ("ES256", "RS256"),
                                    jwks_file=str(tmp_path / "jwks.json"))])
    forged = jwt.encode(claims, DemoKeys().private_key, algorithm="RS256", headers={"kid": "ec-1"})
    with pytest.raises(IdentityError) as err:
        both.verify(forged)
    assert err.value.reason == "invalid_algorithm"


def test_claim_mapping(tmp_path: Path) -> None:
    keys = DemoKeys()
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    issuer = Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(tmp_path / "jwks.json"),
                    claims=ClaimMapping(subject="email", roles="groups", tenant="org"))
    token = jwt.encode({"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "123", "email": "a@acme.example",
                        "groups": "analyst", "org": "acme", "exp": int(time.time()) + 600},
                       keys.private_key, algorithm="RS256", headers={"kid": DEMO_KID})
    subject = IdentityVerifier([issuer]).verify(token)
    assert (subject.id, subject.roles, subject.tenant) == ("a@acme.example", ("analyst",), "acme")


def test_cached_token_stops_working_at_expiry(tmp_path: Path) -> None:
    keys = DemoKeys()
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    now = [time.time()]  # the verifier's clock, moved by the test instead of waiting
    verifier = IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(tmp_path / "jwks.json"))],
                                leeway_s=0, clock=lambda: now[0])
    token = keys.token("alice", ["analyst"], "acme", ttl_s=1)
    assert verifier.verify(token).id == "alice"
    now[0] += 2.1
    with pytest.raises(IdentityError) as err:
        verifier.verify(token)
    assert err.value.reason == "token_expired"


def test_a_broken_refetch_keeps_the_keys_already_loaded(jwks_server: tuple[JwksServer, DemoKeys]) -> None:
    server, keys = jwks_server
    verifier = IdentityVerifier([_issuer(server.url, refetch_interval_s=0.0)])
    server.jwks = {"keys": [{"kid": "bad", "kty": "RSA", "n": "not-base64!"}]}
    claims = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "x", "exp": int(time.time()) + 600}
    with pytest.raises(IdentityError) as err:
        verify_async(verifier, jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": "bad"}))
    assert err.value.reason == "unknown_key"
    assert server.fetches == 2
    assert verifier.verify(keys.token("alice", ["analyst"], "acme")).id == "alice"


def test_a_burst_of_unknown_kids_fetches_once_and_never_blocks_the_loop(
        jwks_server: tuple[JwksServer, DemoKeys]) -> None:
    """Twenty concurrent checks with unknown kids: one fetch (single-flight), done in a thread."""
    server, keys = jwks_server
    verifier = IdentityVerifier([_issuer(server.url, refetch_interval_s=0.0)])
    claims = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "x", "exp": int(time.time()) + 600}

    async def burst() -> list[BaseException | Subject]:
        tokens = [jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": f"k{i}"}) for i in range(20)]
        return await asyncio.gather(*(verifier.verify_headers_async({"authorization": f"Bearer {t}"})
                                      for t in tokens), return_exceptions=True)

    results = asyncio.run(burst())
    assert all(isinstance(r, IdentityError) and r.reason == "unknown_key" for r in results)
    assert server.fetches == 2  # the start-up load and one refetch for the whole burst


@pytest.mark.parametrize(("claim", "value", "reason"), [
    ("exp", "9999999999", "invalid_token"),  # a string NumericDate: another reader might coerce it
    ("exp", True, "invalid_token"),
    ("nbf", "0", "invalid_token"),
    ("iat", [1], "invalid_token"),
    ("nbf", 10**10, "token_not_yet_valid"),
    ("iat", 10**10, "token_not_yet_valid"),
])
def test_time_claims_are_numbers_checked_on_the_verifiers_clock(tmp_path: Path, claim: str, value: Any,
                                                               reason: str) -> None:
    keys = DemoKeys()
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    verifier = IdentityVerifier([Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(tmp_path / "jwks.json"))])
    claims: dict[str, Any] = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "bob", "exp": int(time.time()) + 600,
                              claim: value}
    token = jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": DEMO_KID})
    with pytest.raises(IdentityError) as err:
        verifier.verify(token)
    assert err.value.reason == reason


@pytest.mark.parametrize("audiences", ["agents-api", {"a": 1}, [1]])
def test_audiences_are_a_list_never_a_string_read_letter_by_letter(tmp_path: Path, audiences: Any) -> None:
    from agentgov.engine.config import ConfigError, build_governor, load_config
    from agentgov.engine.hooks.identity import issuers_from_config

    with pytest.raises(ValueError, match=r"audiences must be a list of strings"):
        issuers_from_config([{"issuer": "i", "audiences": audiences, "jwks_file": "j.json"}], tmp_path)
    path = tmp_path / "agentgov.yaml"
    path.write_text(json.dumps({"identity": {"issuers": [{"issuer": "i", "audiences": audiences,
                                                          "jwks_file": "j.json"}]}}))
    with pytest.raises(ConfigError, match=r"identity.issuers\[0\].audiences"):
        build_governor(load_config(path))


def test_a_caller_arriving_while_the_refetch_thread_finishes_does_not_fetch_again(tmp_path: Path) -> None:
    """The refetch thread updates the key set before the event loop hears it is done: a caller that
    arrives in between waits for that refetch and uses it, instead of starting another."""
    from agentgov.engine.hooks.identity import KeySet

    keys = DemoKeys()
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    keyset = KeySet(Issuer(DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(tmp_path / "jwks.json"),
                           refetch_interval_s=0.0))
    fetched = threading.Event()
    fetches: list[float] = []
    real = keyset.refresh

    def refresh() -> None:
        real()
        fetches.append(time.monotonic())
        fetched.set()

    keyset.refresh = refresh  # type: ignore[method-assign]

    async def scenario() -> None:
        first = asyncio.create_task(keyset.refresh_async())
        await asyncio.sleep(0)  # the first caller is now waiting on its thread
        assert fetched.wait(10)  # that thread has fetched; the loop has not yet heard
        second = asyncio.create_task(keyset.refresh_async())
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    assert len(fetches) == 1
