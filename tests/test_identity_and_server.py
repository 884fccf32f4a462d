"""Identity hook configuration rules and the ext_authz server's fail-closed path (in-process gRPC)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc

from agentgov.cli.stack import DemoKeys, free_port
from agentgov.engine.hooks.identity import IdentityError, Issuer
from agentgov.engine.pipeline import Governor
from agentgov.engine.server.app import WorkerConfig, run_worker
from tests.support import ExplodingBackend, verifier


def test_issuer_config_refuses_shared_secret_algorithms_and_ambiguous_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="asymmetric only"):
        Issuer("i", ("a",), algorithms=("HS256",), jwks_file="x")
    with pytest.raises(ValueError, match="exactly one of jwks_file or jwks_url"):
        Issuer("i", ("a",))
    with pytest.raises(ValueError, match="audience"):
        Issuer("i", (), jwks_file="x")


def test_verified_subject_and_cache(tmp_path: Path) -> None:
    keys = DemoKeys()
    v = verifier(tmp_path, keys)
    token = keys.token("alice", ["analyst", "analyst", "pii_reader"], "acme")
    subject = v.verify_header(f"Bearer {token}")
    assert (subject.id, subject.roles, subject.tenant, subject.authenticated) == \
        ("alice", ("analyst", "pii_reader"), "acme", True)
    assert v.verify(token) is subject  # cached by hash


@pytest.mark.parametrize(("header", "reason"), [
    (None, "missing_credentials"), ("Basic abc", "invalid_credentials"), ("Bearer ", "invalid_credentials"),
])
def test_header_errors(tmp_path: Path, header: str | None, reason: str) -> None:
    with pytest.raises(IdentityError) as err:
        verifier(tmp_path, DemoKeys()).verify_header(header)
    assert err.value.reason == reason


def test_bad_claims_are_refused(tmp_path: Path) -> None:
    keys = DemoKeys()
    v = verifier(tmp_path, keys)
    with pytest.raises(IdentityError, match="roles"):
        v.verify(keys.token("alice", [1], "acme"))  # type: ignore[list-item]
    with pytest.raises(IdentityError, match="sub"):
        v.verify(keys.token("", ["a"], "acme"))
    with pytest.raises(IdentityError) as err:
        v.verify(keys.token("a", ["a"], "acme", nbf=int(__import__("time").time()) + 3600))
    assert err.value.reason == "token_not_yet_valid"


def test_internal_error_is_503_json_without_internals(tmp_path: Path) -> None:
    keys = DemoKeys()
    governor = Governor(ExplodingBackend(), verifier(tmp_path, keys))
    port = free_port()

    async def scenario() -> authz.CheckResponse:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_worker(governor, WorkerConfig("127.0.0.1", port, drain_s=0.1), ready, stop))
        await ready.wait()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = authz.CheckRequest()
            http = request.attributes.request.http
            http.method, http.path, http.host = "POST", "/mcp", "demo"
            http.headers["authorization"] = f"Bearer {keys.token('alice', ['analyst'], 'acme')}"
            http.raw_body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
            response = await authz_grpc.AuthorizationStub(channel).Check(request)
        stop.set()
        await task
        return response

    response = asyncio.run(scenario())
    denied = response.denied_response
    assert denied.status.code == 503
    body = json.loads(denied.body)
    assert body["error"] == "unavailable"
    assert body["reasons"] == ["internal_error"]
    assert "unexpected" not in denied.body


class SlowStart(Governor):
    """A Governor whose start (a bundle's first load, the audit log opening) waits for the test."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def start(self) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().start()


def test_a_worker_opens_its_ports_only_once_started(tmp_path: Path) -> None:
    """A check must not reach a worker whose policy is still loading (it would be refused with 503
    policy_unavailable): the HTTP door accepts no connection until start() has finished (gRPC's
    port is bound earlier, but its server answers nothing before then)."""
    governor = SlowStart(ExplodingBackend(), verifier(tmp_path, DemoKeys()))
    port, http_port = free_port(), free_port()

    async def refused(p: int) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", p)
        except ConnectionRefusedError:
            return True
        writer.close()
        return False

    async def scenario() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_worker(governor, WorkerConfig("127.0.0.1", port, drain_s=0.1,
                                                                     http_port=http_port), ready, stop))
        await governor.entered.wait()
        assert await refused(http_port)
        governor.gate.set()
        await ready.wait()
        assert not await refused(http_port)
        stop.set()
        await task

    asyncio.run(scenario())
