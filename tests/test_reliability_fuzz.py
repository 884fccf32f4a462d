"""Fuzzing the decision path with malformed, huge, deeply nested and non-UTF-8 requests: never an
exception, never a status outside the contract, and never an allow the policy would not give.

Every generated request goes through the same staged runner as the gateway (identity with a valid
JWT, protocol parsing for each route, the PII hook, the shipped Rego library). An allow is checked
against the policy itself: every input the runner built is put to the backend again, and the body
must be JSON that a strict reader (no repeated keys) takes as it is.

CI runs AGENTGOV_FUZZ_EXAMPLES examples per test (default 300). The documented long run
(docs/reliability.md) is `AGENTGOV_FUZZ_EXAMPLES=500000 pytest --timeout 0 tests/test_reliability_fuzz.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentgov.cli.stack import DemoKeys
from agentgov.engine.config import build_governor, load_config
from agentgov.engine.pipeline import Envelope, Governor
from tests.conftest import POLICIES

pytestmark = pytest.mark.reliability
EXAMPLES = int(os.environ.get("AGENTGOV_FUZZ_EXAMPLES", "300"))
ROUTES = ["/mcp", "/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings", "/anything/else"]
STATUSES = {200, 400, 401, 403, 413, 415, 429, 503}
KEYS = DemoKeys()


@pytest.fixture(scope="module")
def governor(tmp_path_factory: pytest.TempPathFactory) -> Governor:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "jwks.json").write_text(json.dumps(KEYS.jwks()))
    (base / "agentgov.yaml").write_text(json.dumps({
        "policy": {"paths": [str(POLICIES)]}, "server": {"mcp_paths": ["/mcp"]},
        "identity": {"issuers": [{"issuer": "https://issuer.agentgov.demo", "audiences": ["agentgov-demo"],
                                  "algorithms": ["RS256"], "jwks_file": "jwks.json"}]}}))
    return build_governor(load_config(Path(base / "agentgov.yaml")))


TOKEN = KEYS.token("alice", ["analyst"], "acme")
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                  st.text(max_size=40), st.sampled_from(["tools/call", "crm.query", "gpt-4o-mini", "acme", "user",
                                                         "2.0", "AKIAIOSFODNN7EXAMPLE", "bob@example.com"]))
_keys = st.sampled_from(["jsonrpc", "method", "params", "name", "arguments", "id", "model", "messages", "role",
                         "content", "max_tokens", "tenant_id", "input", "Model", "METHOD", "text", "type"])
_json = st.recursive(_leaf, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.one_of(_keys, st.text(max_size=8)), children, max_size=5)),
    max_leaves=30)


def _nested(depth: int) -> bytes:
    return b'{"jsonrpc":"2.0","method":"tools/call","params":' + b"[" * depth + b"]" * depth + b"}"


_text = st.one_of(st.text(max_size=60), st.sampled_from(["open deals", "mail bob@example.com", "AKIAIOSFODNN7EXAMPLE",
                                                        "\u202egnp.exe", "a\x00b", "\ud7ff"]))
_extra = st.dictionaries(st.one_of(_keys, st.text(max_size=6)), _leaf, max_size=2)
_mcp_call = st.builds(
    lambda rid, name, tenant, query, extra: {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {
        "name": name, "arguments": {"tenant_id": tenant, "query": query, **extra}}},
    st.one_of(st.integers(0, 2**53), st.text(max_size=8)), st.sampled_from(["crm.query", "crm.delete", "x"]),
    st.sampled_from(["acme", "globex", "ACME"]), _text, _extra)
_chat = st.builds(
    lambda model, limit, content, extra: {"model": model, "max_tokens": limit,
                                          "messages": [{"role": "user", "content": content}], **extra},
    st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "o1-pro"]),
    st.one_of(st.integers(-1, 10_000), st.none(), st.floats(), st.text(max_size=4)), _text, _extra)
# Near-valid requests: mostly what the policy allows, with the edits that have fooled parsers elsewhere.
_near_valid = st.one_of(
    st.one_of(_mcp_call, st.lists(_mcp_call, min_size=1, max_size=4)).map(lambda d: ("/mcp", json.dumps(d).encode())),
    _chat.map(lambda d: ("/v1/chat/completions", json.dumps(d).encode())))

_bodies = st.one_of(
    _json.map(lambda doc: json.dumps(doc).encode()),                    # structurally anything
    st.binary(max_size=300),                                            # not JSON, not UTF-8
    st.integers(1, 3000).map(_nested),                                  # deep nesting
    st.text(max_size=200).map(lambda t: t.encode("utf-16")),            # another encoding
    st.tuples(_json, st.integers(0, 50)).map(                            # truncated JSON
        lambda d: json.dumps(d[0]).encode()[: -d[1] or None]),
    st.just(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crm.query",'
            b'"arguments":{"tenant_id":"acme"}},"method":"tools/list"}'),  # a repeated key
    st.integers(100_000, 2_000_000).map(lambda n: b'{"a":"' + b"x" * n + b'"}'),  # huge
)
_headers = st.one_of(st.just({}), st.dictionaries(
    st.sampled_from(["content-type", "mcp-method", "mcp-name", "x-agent-id", "x-agentgov-subject", "x-api-key",
                     "x-agentgov-justification", "accept"]),
    st.text(max_size=30), max_size=4))


def _strict(raw: bytes) -> Any:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), "an allowed body repeats a key"
        return dict(pairs)

    return json.loads(raw.decode("utf-8"), object_pairs_hook=no_repeats)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=st.one_of(_near_valid, st.tuples(st.sampled_from(ROUTES), _bodies)), headers=_headers,
       truncated=st.sampled_from([False] * 9 + [True]), method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]))
def test_any_request_gets_a_contract_answer_and_only_the_policys_allows(
        governor: Governor, request: tuple[str, bytes], headers: dict[str, str], truncated: bool, method: str) -> None:
    route, body = request
    env = Envelope(method=method, path=route, host="api.example",
                   headers={**headers, "authorization": f"Bearer {TOKEN}"}, body=body, body_truncated=truncated,
                   request_id="fuzz")
    verdict = asyncio.run(governor.decide(env))
    decision = verdict.decision
    event(f"status {decision.status}")  # the long run reports how often each answer came up
    assert decision.status in STATUSES
    assert decision.allow == (decision.status == 200)
    if not decision.allow:
        assert decision.reasons
        return
    assert not truncated
    if body:
        _strict(body)
    assert verdict.inputs, "an allow without a policy input"
    for policy_input in verdict.inputs:
        assert asyncio.run(governor.backend.evaluate(policy_input)).allow


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(authorization=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                               st.builds(lambda t, cut: "Bearer " + TOKEN[:cut] + t, st.text(max_size=5),
                                         st.integers(0, len(TOKEN)))))
def test_any_authorization_header_is_an_answer_never_a_crash(governor: Governor, authorization: str) -> None:
    env = Envelope(method="POST", path="/mcp", host="api.example", headers={"authorization": authorization},
                   body=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    verdict = asyncio.run(governor.decide(env))
    scheme, _, credential = authorization.partition(" ")
    # Only the valid token is an allow (whitespace around a header value is not part of it, RFC 9110).
    if scheme.lower() != "bearer" or credential.strip() != TOKEN:
        assert not verdict.decision.allow
        assert verdict.decision.status in (400, 401)
