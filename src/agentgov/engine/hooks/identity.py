"""Who is calling: verify a bearer JWT (pyjwt) against configured issuers and map it to a Subject.

Rules that hold for every issuer: the algorithm must be in that issuer's allow-list and the key
type must match the algorithm family (so `none`, and HS256 "signed" with an RSA public key, are
always rejected); `exp` is required; `iss` and `aud` must match; `nbf`/`iat` are honoured with
leeway. Verified tokens are cached by SHA-256 until they expire, bounded in size.

A token signed with a key id the JWKS does not have makes the JWKS be fetched again, at most once
per interval, off the event loop and single-flight (`verify_headers_async`): a worker never blocks
on the network inside a decision, and a burst of unknown kids costs one fetch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK

from agentgov.engine.hooks.api_keys import DEFAULT_API_KEY_HEADER, ApiKey, ApiKeyStore
from agentgov.engine.hooks.base import Deny, Enrichment, HookRequest
from agentgov.engine.keys import unknown_keys
from agentgov.engine.model import Subject
from agentgov.engine.protocols import ProtocolError
from agentgov.engine.protocols.jsonbody import decode_json

_ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class IdentityError(Exception):
    """Why a credential was refused. `reason` is a stable, client-safe code."""

    def __init__(self, reason: str, detail: str, *, refetch: KeySet | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.refetch = refetch  # a key set worth fetching again before giving up (unknown kid)


@dataclass(frozen=True)
class ClaimMapping:
    subject: str = "sub"
    roles: str = "roles"
    tenant: str = "tenant"


@dataclass
class Issuer:
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256",)
    jwks_file: str | None = None
    jwks_url: str | None = None
    claims: ClaimMapping = field(default_factory=ClaimMapping)
    refetch_interval_s: float = 30.0

    def __post_init__(self) -> None:
        bad = [a for a in self.algorithms if a not in _ASYMMETRIC]
        if bad:
            # Shared-secret algorithms invite key confusion with published keys; they are not offered.
            raise ValueError(f"issuer {self.issuer}: algorithm(s) {bad} not allowed (asymmetric only)")
        if not self.audiences:
            raise ValueError(f"issuer {self.issuer}: at least one audience is required")
        if bool(self.jwks_file) == bool(self.jwks_url):
            raise ValueError(f"issuer {self.issuer}: give exactly one of jwks_file or jwks_url")


class KeySet:
    """A JWKS from a file or URL, reloaded on an unknown `kid` at most once per interval."""

    def __init__(self, issuer: Issuer) -> None:
        self._issuer = issuer
        self._keys: dict[str, PyJWK] = {}
        self._loaded_at = 0.0
        self._refreshing: asyncio.Lock | None = None
        # Refreshes finished, counted on the event loop. Not `_loaded_at`: the refresh thread sets that
        # as soon as it has fetched, so a caller arriving in between took it for its own starting
        # point and fetched again (a burst of unknown kids fetched twice under load).
        self._refreshed = 0
        try:
            self._load()
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            # At start-up a missing JWKS is fatal (fail closed), with a message that says whose and where.
            source = issuer.jwks_file or issuer.jwks_url
            raise ValueError(f"issuer {issuer.issuer}: cannot load its JWKS from {source}: {exc}") from None

    def _load(self) -> None:
        cfg = self._issuer
        if cfg.jwks_file:
            raw = Path(cfg.jwks_file).read_text(encoding="utf-8")
        else:
            assert cfg.jwks_url is not None
            with urllib.request.urlopen(cfg.jwks_url, timeout=5) as resp:  # noqa: S310 - configured URL
                raw = resp.read(1024 * 1024).decode("utf-8")
        doc = json.loads(raw)
        keys: dict[str, PyJWK] = {}
        entries = doc.get("keys", []) if isinstance(doc, dict) else []
        for jwk in entries if isinstance(entries, list) else []:
            if isinstance(jwk, dict) and jwk.get("kid"):
                keys[jwk["kid"]] = PyJWK(jwk)
        if not keys:
            # An empty key set would refuse every token with "unknown_key": say so at start instead.
            raise ValueError("the JWKS has no usable keys (a `keys` list whose entries each have a `kid`)")
        self._keys = keys
        self._loaded_at = time.monotonic()

    def get(self, kid: str) -> PyJWK | None:
        return self._keys.get(kid)

    def refetch_due(self) -> bool:
        return time.monotonic() - self._loaded_at >= self._issuer.refetch_interval_s

    def refresh(self) -> None:
        """Fetch again (blocking). A broken fetch keeps the keys already loaded."""
        try:
            self._load()
        except (OSError, ValueError, jwt.PyJWTError):
            self._loaded_at = time.monotonic()  # do not retry before the interval either

    async def refresh_async(self) -> None:
        """`refresh` in a thread, once for all callers waiting at the same moment."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        seen = self._refreshed
        async with self._refreshing:
            if self._refreshed != seen or not self.refetch_due():
                return  # another caller refreshed while this one waited
            try:
                await asyncio.to_thread(self.refresh)
            finally:
                self._refreshed += 1


class IdentityVerifier:
    def __init__(self, issuers: Sequence[Issuer], *, api_keys: Sequence[ApiKey] = (), leeway_s: float = 30.0,
                 cache_size: int = 10_000, api_key_header: str = DEFAULT_API_KEY_HEADER,
                 clock: Callable[[], float] = time.time) -> None:
        if not issuers and not api_keys:
            raise ValueError("at least one issuer or API key is required")
        self._api_keys = ApiKeyStore(list(api_keys))
        self.api_key_header = api_key_header.lower()
        self._issuers = {i.issuer: i for i in issuers}
        self._keys = {i.issuer: KeySet(i) for i in issuers}
        self._leeway = leeway_s
        self._cache: OrderedDict[str, tuple[float, Subject]] = OrderedDict()
        self._cache_size = cache_size
        # Seconds since the epoch: the one clock for `exp`, `nbf`, `iat` and the cache (tests inject theirs).
        self._clock = clock

    async def verify_headers_async(self, headers: Mapping[str, str]) -> Subject:
        """`verify_headers`, fetching the JWKS again (off the event loop) for an unknown key id."""
        try:
            return self.verify_headers(headers)
        except IdentityError as exc:
            if exc.refetch is None:
                raise
            await exc.refetch.refresh_async()
            return self.verify_headers(headers)

    def verify_headers(self, headers: Mapping[str, str]) -> Subject:
        """`Authorization: Bearer <JWT or API key>` or `<api_key_header>: <key>`; both at once is refused.

        The API-key header is only ours when API keys are configured: otherwise it is left alone
        (Anthropic clients, for one, send their provider key in `x-api-key`).
        """
        authorization = headers.get("authorization")
        api_key = headers.get(self.api_key_header) if len(self._api_keys) else None
        if authorization and api_key:
            raise IdentityError("ambiguous_credentials",
                                f"send either Authorization or {self.api_key_header}, not both")
        if api_key:
            return self._verify_api_key(api_key.strip(), self.api_key_header)
        return self.verify_header(authorization)

    def verify_header(self, authorization: str | None) -> Subject:
        if not authorization:
            raise IdentityError("missing_credentials", "no Authorization header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IdentityError("invalid_credentials", "Authorization must be 'Bearer <token>'")
        token = token.strip()
        if token.count(".") != 2 and len(self._api_keys):
            return self._verify_api_key(token, "authorization")
        if not self._issuers:
            raise IdentityError("invalid_credentials", "only API keys are accepted here")
        return self.verify(token)

    def _verify_api_key(self, key: str, header: str) -> Subject:
        subject = self._api_keys.lookup(key, header)
        if subject is None:
            raise IdentityError("invalid_api_key", "API key is not recognised")
        return subject

    def verify(self, token: str) -> Subject:
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(digest)
        now = self._clock()
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(digest)
            return cached[1]
        subject, expires = self._verify_uncached(token)
        self._cache[digest] = (expires, subject)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return subject

    def _verify_uncached(self, token: str) -> tuple[Subject, float]:
        if len(token) > MAX_TOKEN_CHARS:
            raise IdentityError("invalid_token", f"token is longer than {MAX_TOKEN_CHARS} characters")
        _one_reading(token)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise IdentityError("invalid_token", "token is not a well-formed JWT") from None
        issuer = self._issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise IdentityError("invalid_issuer", "token issuer is not trusted")
        alg = header.get("alg")
        if alg not in issuer.algorithms:
            raise IdentityError("invalid_algorithm", f"algorithm {alg!r} is not allowed for this issuer")
        keyset = self._keys[issuer.issuer]
        key = keyset.get(str(header.get("kid", "")))
        if key is None:
            raise IdentityError("unknown_key", "token key id is not in the issuer's JWKS",
                                refetch=keyset if keyset.refetch_due() else None)
        if key.key_type != _KEY_TYPES.get(str(alg)[:2]):
            raise IdentityError("invalid_algorithm", "token algorithm does not match the key type")
        try:
            # The times are checked below against this verifier's clock: pyjwt would read its own.
            claims = jwt.decode(token, key=key.key, algorithms=[str(alg)], audience=list(issuer.audiences),
                                issuer=issuer.issuer,
                                options={"require": ["exp", "iss", "aud"], "verify_exp": False, "verify_nbf": False,
                                         "verify_iat": False})
        except jwt.InvalidAudienceError:
            raise IdentityError("invalid_audience", "token audience is not accepted") from None
        except jwt.PyJWTError as exc:
            raise IdentityError("invalid_token", f"token rejected: {type(exc).__name__}") from None
        expires = self._check_times(claims)
        return _subject(claims, issuer.claims), expires

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        """`exp` (required), `nbf` and `iat` are NumericDates (RFC 7519 §2): JSON numbers, never strings
        or booleans, which another reader might coerce differently. Returns `exp`."""
        times: dict[str, float] = {}
        for name in ("exp", "nbf", "iat"):
            if name not in claims:
                continue
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise IdentityError("invalid_token", f"the {name} claim must be a number (NumericDate)")
            times[name] = float(value)
        now = self._clock()
        if times["exp"] <= now - self._leeway:
            raise IdentityError("token_expired", "token has expired")
        if "nbf" in times and times["nbf"] > now + self._leeway:
            raise IdentityError("token_not_yet_valid", "token is not valid yet")
        if "iat" in times and times["iat"] > now + self._leeway:
            raise IdentityError("token_not_yet_valid", "token was issued in the future")
        return times["exp"]


# Far above any real token (a JWT with a few hundred roles is ~10 KB); Envoy's own header limit is 60 KiB.
MAX_TOKEN_CHARS = 16 * 1024


def _one_reading(token: str) -> None:
    """Refuse a token whose header or claims repeat a key: PyJWT keeps the last `roles`, other
    libraries the first, so a token with two could mean one thing here and another to the backend."""
    for segment in token.split(".")[:2]:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
            decode_json(raw)
        except (ValueError, ProtocolError):
            raise IdentityError("invalid_token", "token is not a well-formed JWT (or repeats a key)") from None


def _subject(claims: Mapping[str, Any], mapping: ClaimMapping) -> Subject:
    sub = claims.get(mapping.subject)
    if not isinstance(sub, str) or not sub:
        raise IdentityError("invalid_token", f"token has no `{mapping.subject}` claim")
    roles_raw = claims.get(mapping.roles, [])
    roles = [roles_raw] if isinstance(roles_raw, str) else roles_raw
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise IdentityError("invalid_token", f"`{mapping.roles}` claim must be a string or list of strings")
    tenant = claims.get(mapping.tenant)
    return Subject(id=sub, roles=tuple(dict.fromkeys(roles)), tenant=str(tenant) if tenant is not None else None,
                   claims=dict(claims), authenticated=True)


def issuers_from_config(doc: Any, base: Path) -> list[Issuer]:
    """Build issuers from the `identity.issuers` list of agentgov.yaml (paths relative to the file)."""
    if not isinstance(doc, list) or not doc:
        raise ValueError("identity.issuers must be a non-empty list")
    out: list[Issuer] = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise ValueError(f"identity.issuers[{i}] must be a mapping")
        problem = unknown_keys(item, {"issuer", "audiences", "algorithms", "jwks_file", "jwks_url", "claims"})
        if problem:
            raise ValueError(f"identity.issuers[{i}]: {problem}")
        jwks_file = item.get("jwks_file")
        for key in ("audiences", "algorithms"):
            # A string here would be read character by character by tuple(): "api" is not ("a", "p", "i").
            value = item.get(key, [])
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"identity.issuers[{i}].{key} must be a list of strings (one audience: [name])")
        out.append(Issuer(
            issuer=str(item["issuer"]), audiences=tuple(item.get("audiences", [])),
            algorithms=tuple(item.get("algorithms", ["RS256"])),
            jwks_file=str(base / jwks_file) if jwks_file else None, jwks_url=item.get("jwks_url"),
            claims=ClaimMapping(**(item.get("claims") or {}))))
    return out


class IdentityHook:
    """Who is calling, as the first `before` hook: a verified Subject, or a 401 deny."""

    name = "identity"
    phases = frozenset({"before"})
    failure_mode = "deny"
    timeout_s: float | None = None  # verification is CPU-bound; the JWKS refetch has its own 5 s bound

    def __init__(self, verifier: IdentityVerifier) -> None:
        self.verifier = verifier

    async def before(self, request: HookRequest) -> Enrichment | Deny | None:
        try:
            subject = await self.verifier.verify_headers_async(request.headers)
        except IdentityError as exc:
            return Deny(exc.reason, status=401, error=exc.detail)
        header = subject.claims.get("credential_header") if subject.claims.get("auth") == "api_key" else None
        return Enrichment(subject=subject, consumed_headers=(header,) if isinstance(header, str) else ())
