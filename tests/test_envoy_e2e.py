"""End to end through the real Envoy binary: Envoy → agentgov ext_authz → demo backend."""

from __future__ import annotations

import base64
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from agentgov.cli.stack import DEMO_AUDIENCE, DEMO_ISSUER, DEMO_KID, LocalStack
from tests.conftest import POLICIES
from tests.http_helpers import CALL, bearer, send
from tests.pki import write_pki
from tests.support import wait_for

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    s = LocalStack(policies=POLICIES, workers=2)
    with s:
        yield s


def test_allowed_tool_call_carries_identity_and_drops_spoofed_headers(stack: LocalStack) -> None:
    token = stack.keys.token("alice", ["analyst"], "acme")
    status, headers, body = send(stack, "/mcp", CALL, {**bearer(token), "x-agentgov-subject": "mallory",
                                                        "x-agentgov-roles": "admin", "x-agentgov-extra": "1"})
    assert status == 200
    assert body["result"]["content"][0]["text"] == "crm.query ok"
    seen = json.loads(headers["x-demo-seen"])
    assert seen["x-agentgov-subject"] == "alice"
    assert seen["x-agentgov-roles"] == "analyst"
    assert seen["x-agentgov-tenant"] == "acme"
    assert len(seen["x-agentgov-decision-id"]) == 32
    assert "x-agentgov-extra" not in seen


def test_forbidden_tool_is_403_with_reasons_and_decision_id(stack: LocalStack) -> None:
    token = stack.keys.token("dev1", ["developer"], "acme")
    status, headers, body = send(stack, "/mcp", CALL, bearer(token))
    assert status == 403
    assert body["error"] == "forbidden"
    assert body["reasons"] == ["default_deny"]
    assert body["decision_id"] == headers["x-agentgov-decision-id"]
    assert "x-demo-seen" not in headers


def test_tenant_argument_outside_own_tenant_is_403(stack: LocalStack) -> None:
    token = stack.keys.token("alice", ["analyst"], "acme")
    other = {**CALL, "params": {"name": "crm.query", "arguments": {"tenant_id": "globex"}}}
    status, _, body = send(stack, "/mcp", other, bearer(token))
    assert (status, body["reasons"]) == (403, ["tenant_mismatch"])


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def _hs256(secret: bytes, claims: dict[str, Any]) -> str:
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': DEMO_KID})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def bad_tokens(stack: LocalStack) -> dict[str, str | None]:
    now = int(time.time())
    claims = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "alice", "roles": ["analyst"], "tenant": "acme",
              "iat": now, "exp": now + 600}
    return {
        "missing": None,
        "expired": stack.keys.token("alice", ["analyst"], "acme", exp=now - 3600, iat=now - 7200),
        "wrong_audience": stack.keys.token("alice", ["analyst"], "acme", aud="someone-else"),
        "wrong_issuer": stack.keys.token("alice", ["analyst"], "acme", iss="https://evil.example"),
        "alg_none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': DEMO_KID})}.{_b64(claims)}.",
        # HS256 keyed with the issuer's *public* key: the classic key-confusion attack.
        "hs256_public_key": _hs256(stack.keys.public_pem(), claims),
        "garbage": "not-a-jwt",
        "unknown_kid": jwt.encode(claims, stack.keys.private_key, algorithm="RS256", headers={"kid": "other"}),
    }


@pytest.mark.parametrize("case", ["missing", "expired", "wrong_audience", "wrong_issuer", "alg_none",
                                  "hs256_public_key", "garbage", "unknown_kid"])
def test_bad_identity_is_401(stack: LocalStack, case: str) -> None:
    token = bad_tokens(stack)[case]
    status, headers, body = send(stack, "/mcp", CALL, bearer(token) if token else {})
    assert status == 401, body
    assert headers["www-authenticate"].startswith('Bearer realm="agentgov"')
    assert body["error"] == "unauthenticated"
    assert body["decision_id"]
    assert "x-demo-seen" not in headers


def test_malformed_json_is_400(stack: LocalStack) -> None:
    token = stack.keys.token("alice", ["analyst"], "acme")
    status, _, body = send(stack, "/mcp", None, bearer(token), raw=b'{"jsonrpc": "2.0", "method": ')
    assert status == 400
    assert body["reasons"] == ["malformed_request"]
    assert body["detail"] == "request body is not valid JSON (line 1, column 30)"
    assert "Traceback" not in json.dumps(body)


def test_llm_call_by_model_grant(stack: LocalStack) -> None:
    chat = {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    ok = send(stack, "/v1/chat/completions", chat, bearer(stack.keys.token("alice", ["analyst"], "acme")))
    assert ok[0] == 200
    denied = send(stack, "/v1/chat/completions", chat, bearer(stack.keys.token("s", ["support"], "acme")))
    assert denied[0] == 403
    too_big = send(stack, "/v1/chat/completions", {**chat, "max_tokens": 10**6},
                   bearer(stack.keys.token("alice", ["analyst"], "acme")))
    assert (too_big[0], too_big[2]["reasons"]) == (403, ["max_tokens_exceeded"])


@pytest.mark.reliability
def test_agentgov_down_means_503_and_nothing_reaches_backend() -> None:
    s = LocalStack(policies=POLICIES)
    try:
        s.start()
        token = s.keys.token("alice", ["analyst"], "acme")
        assert send(s, "/mcp", CALL, bearer(token))[0] == 200
        s.stop_process("agentgov")
        status, headers, _ = send(s, "/mcp", CALL, bearer(token))
        assert status == 503
        assert "x-demo-seen" not in headers
    finally:
        s.stop()


@pytest.mark.parametrize("send_body", [False, True])
def test_envoy_mcp_filter_metadata_drives_the_decision(send_body: bool) -> None:
    """With Envoy's MCP filter, agentgov reads the call from its metadata (and, with the body too,
    checks that both parsers saw the same call)."""
    s = LocalStack(policies=POLICIES, mcp_filter=True, send_body=send_body)
    try:
        s.start()
        # Streamable HTTP clients accept both; the MCP filter only parses requests that say so.
        accept = {"accept": "application/json, text/event-stream"}
        alice, dev = s.keys.token("alice", ["analyst"], "acme"), s.keys.token("dev1", ["developer"], "acme")
        assert send(s, "/mcp", CALL, {**bearer(alice), **accept})[0] == 200
        status, _, body = send(s, "/mcp", CALL, {**bearer(dev), **accept})
        assert (status, body["reasons"]) == (403, ["default_deny"])
        other = {**CALL, "params": {"name": "crm.query", "arguments": {"tenant_id": "globex"}}}
        status, _, body = send(s, "/mcp", other, {**bearer(alice), **accept})
        assert (status, body["reasons"]) == (403, ["tenant_mismatch"])
        if not send_body:
            # Not recognised as MCP by the filter and no body to read: refused, never guessed.
            assert send(s, "/mcp", CALL, bearer(alice))[0] == 400
    finally:
        s.stop()


def test_workers_on_unix_sockets() -> None:
    s = LocalStack(policies=POLICIES, workers=2, unix_sockets=True)
    try:
        s.start()
        alice, dev = s.keys.token("alice", ["analyst"], "acme"), s.keys.token("dev1", ["developer"], "acme")
        assert [send(s, "/mcp", CALL, bearer(alice))[0] for _ in range(6)] == [200] * 6
        assert send(s, "/mcp", CALL, bearer(dev))[0] == 403
        for path in s.socket_paths:
            assert Path(path).is_socket()
    finally:
        s.stop()


def test_envoy_to_agentgov_over_mtls(tmp_path: Path) -> None:
    s = LocalStack(policies=POLICIES, tls_files=write_pki(tmp_path / "pki"))
    try:
        s.start()
        token = s.keys.token("alice", ["analyst"], "acme")
        assert send(s, "/mcp", CALL, bearer(token))[0] == 200
        assert "transport_socket" in (s.workdir / "envoy.yaml").read_text()
    finally:
        s.stop()


def test_envoy_without_the_client_certificate_fails_closed(tmp_path: Path) -> None:
    """agentgov requires Envoy's certificate: an Envoy that has none gets 503, the backend nothing."""
    s = LocalStack(policies=POLICIES, tls_files=write_pki(tmp_path / "pki"), envoy_sends_client_cert=False)
    try:
        s.start()
        status, headers, _ = send(s, "/mcp", CALL, bearer(s.keys.token("alice", ["analyst"], "acme")))
        assert status == 503
        assert "x-demo-seen" not in headers
    finally:
        s.stop()


def test_agentgov_up_check_runs_the_readme_demo() -> None:
    """`make demo` is `agentgov up`; `--check` sends its curl commands and prints the answers."""
    result = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "up", "--check", "--policies", str(POLICIES)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("→ ")]
    assert answers == ["200", "403", "401", "200", "200", "403", "403", "200", "200", "200"]
    assert "you said: Send the receipt to [REDACTED:EMAIL], card [REDACTED:CREDIT_CARD]" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("→ ") and "jane.doe" in line]
    assert '"reasons": ["secret_detected"]' in result.stdout
    assert '"reasons": ["approval_required"]' in result.stdout
    assert '"approval_id": "apr_' in result.stdout
    assert '"tools":[{"name":"web.search"' in result.stdout  # a developer sees web.search and code.exec only
    assert '"reasons": ["tool_granted"]' in result.stdout  # the Data API answer
    assert '"decision": true' in result.stdout  # the AuthZEN answer


@pytest.mark.parametrize("allow_truncated", [False, True])
def test_body_over_the_inspection_limit(allow_truncated: bool) -> None:
    """Envoy sends at most max_request_bytes and flags the rest: denied (413) unless configured."""
    s = LocalStack(policies=POLICIES, max_request_bytes=512,
                   server_extra={"allow_truncated_body": allow_truncated})
    try:
        s.start()
        token = s.keys.token("alice", ["analyst"], "acme")
        big = {**CALL, "params": {"name": "crm.query", "arguments": {"tenant_id": "acme", "query": "x" * 2000}}}
        assert send(s, "/mcp", CALL, bearer(token))[0] == 200  # under the limit
        status, headers, body = send(s, "/mcp", big, bearer(token))
        if allow_truncated:
            # The cut body is no longer valid JSON: refused as malformed, never allowed unread.
            assert (status, body["reasons"]) == (400, ["malformed_request"])
        else:
            assert (status, body["reasons"]) == (413, ["body_truncated"])
            assert body["detail"] == "the request body exceeds the inspection limit"
        assert "x-demo-seen" not in headers
    finally:
        s.stop()


def test_a_client_cannot_forge_or_flood_log_lines(stack: LocalStack) -> None:
    """Every operational log line is one JSON object, whatever a client sends (the audit tests show
    the same for audit records); a huge name is cut; the body's content is not echoed back."""
    token = bearer(stack.keys.token("alice", ["analyst"], "acme"))
    forged = "web.search\n2026-01-01 00:00:00 worker0 agentgov.ext_authz decision ffff allow subject=admin"
    assert send(stack, "/mcp", {**CALL, "params": {"name": forged, "arguments": {"q": "x\u2028y"}}}, token)[0] == 403
    send(stack, "/mcp", {**CALL, "params": {"name": "t" * 50_000, "arguments": {}}}, token)
    dup = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a", "secret-key-name": 1, ' \
          b'"secret-key-name": 2}}'
    status, _, body = send(stack, "/mcp", None, token, raw=dup)
    assert status == 400
    assert "secret-key-name" not in json.dumps(body)
    assert wait_for(lambda: body["decision_id"] in stack.log("agentgov"), 5)  # the refusal's line is written
    lines = [line for line in stack.log("agentgov").splitlines() if line.strip()]
    assert lines
    for line in lines:
        doc = json.loads(line)  # every line is a record of its own
        assert set(doc) >= {"time", "level", "process", "logger", "message"}
        assert len(doc["message"]) < 2100
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert "secret-key-name" not in stack.log("agentgov")


def test_escape_keeps_one_line_and_a_bound() -> None:
    from agentgov.engine.server.logsafe import escape

    assert escape("a\nb\rc\x00d\u2028e") == "a\\nb\\rc\\x00d\\u2028e"
    assert escape("x" * 10, limit=4) == "xxxx… [6 more characters]"
