"""The remote OPA backend, through opa-python-client, against a server speaking OPA's Data API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from agentgov.cli.stack import free_port
from agentgov.engine.backends.opa_remote import OpaEndpoint, RemoteOpaBackend
from agentgov.engine.backends.rego import RegoBackend
from agentgov.engine.pipeline import Governor
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy_input import normalize_input
from agentgov.engine.server.data_api import create_app
from tests.conftest import POLICIES

CRM = normalize_input({
    "subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
    "action": {"kind": "tool.call", "name": "crm.query"},
    "resource": {"type": "tool", "id": "crm.query"}, "arguments": {"tenant_id": "acme"}})


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_remote_opa_decides_like_embedded_rego() -> None:
    sources = discover([POLICIES])
    embedded = RegoBackend(sources.rego, sources.data)

    async def scenario() -> None:
        runner, port = await serve(create_app(Governor(embedded, None), "data.agentgov.decision"))
        remote = RemoteOpaBackend(f"http://127.0.0.1:{port}")
        try:
            for args in ({"tenant_id": "acme"}, {"tenant_id": "globex"}, {}):
                doc = {**CRM, "arguments": args}
                got, want = await remote.evaluate(doc), await embedded.evaluate(doc)
                assert (got.allow, got.reasons, got.status, got.obligations) == \
                    (want.allow, want.reasons, want.status, want.obligations)
                assert got.engine == "opa"
        finally:
            await remote.close()
            await runner.cleanup()

    run(scenario)


def test_remote_opa_unreachable_is_a_deny() -> None:
    async def scenario() -> None:
        remote = RemoteOpaBackend(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
        decision = await remote.evaluate(CRM)
        await remote.close()
        assert not decision.allow
        assert decision.reasons == ("engine_error",)
        assert "remote OPA" in decision.errors[0]

    run(scenario)


@pytest.mark.parametrize(("status", "body", "reason"), [
    (200, {}, "decision_undefined"),
    (200, {"result": "yes"}, "invalid_decision"),
    (500, {"code": "internal_error", "message": "boom"}, "engine_error"),
])
def test_remote_opa_bad_answers_deny(status: int, body: dict[str, Any], reason: str) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/data/{path:.*}", handler)
        runner, port = await serve(app)
        remote = RemoteOpaBackend(f"127.0.0.1:{port}")
        try:
            decision = await remote.evaluate(CRM)
        finally:
            await remote.close()
            await runner.cleanup()
        assert not decision.allow
        assert decision.reasons == (reason,)

    run(scenario)


def test_opa_endpoint_and_rule_validation() -> None:
    assert OpaEndpoint.parse("https://opa.internal") == OpaEndpoint("opa.internal", 443, True)
    assert OpaEndpoint.parse("localhost:9191") == OpaEndpoint("localhost", 9191, False)
    with pytest.raises(ValueError, match="OPA URL"):
        OpaEndpoint.parse("ftp://x")
    with pytest.raises(ValueError, match="rule must look like"):
        RemoteOpaBackend("localhost", rule="decision")



def test_remote_opa_backend_with_the_shipped_library_on_real_opa() -> None:
    """OPA's Data API answered by real OPA (the in-process oracle behind a minimal HTTP front), so the
    remote backend is exercised against OPA's evaluation, not only against agentgov's own Data API."""
    from tests.opa_oracle import OpaUndefinedError, real_opa

    sources = discover([POLICIES])
    opa = real_opa(sources.rego, sources.data)
    embedded = RegoBackend(sources.rego, sources.data)

    async def data_api(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = opa.eval_document(request.match_info["path"].strip("/").replace("/", "."), input=body["input"])
        except OpaUndefinedError:
            return web.json_response({})
        return web.json_response({"result": result})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/data/{path:.*}", data_api)
        runner, port = await serve(app)
        remote = RemoteOpaBackend(f"http://127.0.0.1:{port}")
        try:
            for args in ({"tenant_id": "acme"}, {"tenant_id": "globex"}, {}):
                doc = {**CRM, "arguments": args}
                got, want = await remote.evaluate(doc), await embedded.evaluate(doc)
                assert (got.allow, got.reasons, got.status) == (want.allow, want.reasons, want.status)
        finally:
            await remote.close()
            await runner.cleanup()

    run(scenario)
