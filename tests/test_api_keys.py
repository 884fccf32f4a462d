"""API-key identities: only hashes are stored, keys are checked on the hot path, errors are 401."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from hypothesis import given
from hypothesis import strategies as st

from agentgov.cli.stack import DemoKeys, LocalStack
from agentgov.engine.hooks.api_keys import ApiKey, api_keys_from_config, digest, new_key
from agentgov.engine.hooks.identity import IdentityError, IdentityVerifier
from tests.conftest import POLICIES
from tests.http_helpers import CALL, send
from tests.support import verifier

KEY = new_key()
VERIFIER = IdentityVerifier([], api_keys=[ApiKey("svc-reports", digest(KEY), ("analyst",), "acme")])


def test_key_from_x_api_key_or_bearer() -> None:
    for headers, header in (({"x-api-key": KEY}, "x-api-key"), ({"authorization": f"Bearer {KEY}"}, "authorization")):
        subject = VERIFIER.verify_headers(headers)
        assert (subject.id, subject.roles, subject.tenant, subject.authenticated) == (
            "svc-reports", ("analyst",), "acme", True)
        assert subject.claims == {"auth": "api_key", "key_id": "svc-reports", "credential_header": header}


def test_api_key_header_is_configurable_and_ignored_without_api_keys(tmp_path: Path) -> None:
    custom = IdentityVerifier([], api_keys=[ApiKey("svc", digest(KEY))], api_key_header="X-Agentgov-Key")
    assert custom.verify_headers({"x-agentgov-key": KEY}).id == "svc"
    # Without API keys configured, x-api-key is not agentgov's (Anthropic clients send their provider key there).
    keys = DemoKeys()
    jwt_only = verifier(tmp_path, keys)
    token = keys.token("alice", ["analyst"], "acme")
    assert jwt_only.verify_headers({"authorization": f"Bearer {token}", "x-api-key": "sk-ant-provider"}).id == "alice"


@pytest.mark.parametrize(("headers", "reason"), [
    ({"x-api-key": KEY[:-1] + ("A" if KEY[-1] != "A" else "B")}, "invalid_api_key"),
    ({"x-api-key": "short"}, "invalid_api_key"),
    ({"x-api-key": KEY, "authorization": f"Bearer {KEY}"}, "ambiguous_credentials"),
    ({}, "missing_credentials"),
    ({"authorization": "Bearer a.b.c"}, "invalid_credentials"),  # a JWT, and no issuer is configured
])
def test_bad_api_keys_are_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(IdentityError) as err:
        VERIFIER.verify_headers(headers)
    assert err.value.reason == reason
    assert KEY not in err.value.detail


@given(st.text(min_size=0, max_size=80))
def test_no_other_string_is_accepted(candidate: str) -> None:
    if candidate == KEY:
        return
    with pytest.raises(IdentityError):
        VERIFIER.verify_headers({"x-api-key": candidate})


@pytest.mark.parametrize(("doc", "message"), [
    ([{"id": "a", "key": KEY}], "never the key itself"),
    ([{"id": "a", "sha256": "abc"}], "64 hex digits"),
    ([{"sha256": "0" * 64}], "`id`"),
    ([{"id": "a", "sha256": "0" * 64, "roles": "admin"}], "roles"),
    ([{"id": "a", "sha256": "0" * 64, "scope": "x"}], "unknown key"),
    ({"id": "a"}, "must be a list"),
])
def test_config_errors(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        api_keys_from_config(doc)


def test_duplicate_digest_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        IdentityVerifier([], api_keys=[ApiKey("a", "0" * 64), ApiKey("b", "0" * 64)])


def test_cli_prints_a_key_whose_hash_is_the_entry(run_cli: Callable[..., Result]) -> None:
    result = run_cli("api-key", "--id", "svc-x", "--role", "analyst", "--tenant", "acme")
    assert result.exit_code == 0
    key = re.search(r"agk_[A-Za-z0-9_-]{43}", result.output)
    assert key is not None
    entry = yaml.safe_load(result.output.split("identity.api_keys:\n", 1)[1])[0]
    assert entry == {"id": "svc-x", "sha256": hashlib.sha256(key.group().encode()).hexdigest(),
                     "roles": ["analyst"], "tenant": "acme"}
    assert api_keys_from_config([entry])[0].id == "svc-x"


@pytest.mark.envoy
def test_api_key_through_envoy(tmp_path: Path) -> None:
    key = new_key()
    stack = LocalStack(policies=POLICIES, identity_extra={"api_keys": [
        {"id": "svc-reports", "sha256": digest(key), "roles": ["analyst"], "tenant": "acme"}]})
    try:
        stack.start()
        status, headers, _ = send(stack, "/mcp", CALL, {"x-api-key": key})
        assert status == 200
        seen = json.loads(headers["x-demo-seen"])
        assert seen["x-agentgov-subject"] == "svc-reports"
        assert "x-api-key" not in seen  # agentgov's credential goes no further than agentgov
        status, headers, _ = send(stack, "/mcp", CALL, {"authorization": f"Bearer {key}"})
        assert status == 200
        assert "authorization" not in json.loads(headers["x-demo-seen"])
        # A JWT caller's Authorization header does reach the backend (it may need it).
        status, headers, _ = send(stack, "/mcp", CALL,
                                  {"authorization": f"Bearer {stack.keys.token('alice', ['analyst'], 'acme')}"})
        assert json.loads(headers["x-demo-seen"])["authorization"] == "<present>"
        status, _, body = send(stack, "/mcp", CALL, {"x-api-key": new_key()})
        assert (status, body["reasons"]) == (401, ["invalid_api_key"])
        assert key not in (stack.workdir / "agentgov.yaml").read_text()
        assert key not in stack.log("agentgov")
    finally:
        stack.stop()
