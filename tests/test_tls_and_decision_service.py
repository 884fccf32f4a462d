"""The worker over TLS and mTLS, the delegating client over TLS, and the decision service's
fail-closed paths, all in-process through real gRPC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from agentgov.cli.stack import DemoKeys, free_port
from agentgov.engine.config import Config, build_backend
from agentgov.engine.errors import REASON_UNAVAILABLE
from agentgov.engine.model import Decision
from agentgov.engine.pipeline import Envelope, Governor
from agentgov.engine.proto import DECIDE
from agentgov.engine.proto import decision_pb2 as pb
from agentgov.engine.server.app import WorkerConfig, run_worker
from agentgov.engine.server.decision_client import RemoteDecider, RemoteTLS
from tests.conftest import POLICIES
from tests.pki import make_pki
from tests.support import ExplodingBackend, verifier


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    return make_pki()


def governor(tmp_path: Path, keys: DemoKeys) -> Governor:
    return Governor(build_backend(Config(base=POLICIES.parent)), verifier(tmp_path, keys))


def serve(gov: Governor, cfg: WorkerConfig, body: Callable[[], Awaitable[Any]]) -> Any:
    async def scenario() -> Any:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_worker(gov, cfg, ready, stop))
        await ready.wait()
        try:
            return await body()
        finally:
            stop.set()
            await task

    return asyncio.run(scenario())


async def _decide(channel: grpc.aio.Channel, request: pb.DecideRequest) -> pb.DecideResponse:
    call = channel.unary_unary(DECIDE, request_serializer=pb.DecideRequest.SerializeToString,
                               response_deserializer=pb.DecideResponse.FromString)
    response: pb.DecideResponse = await call(request, timeout=5)
    return response


def _action(token: str) -> pb.DecideRequest:
    return pb.DecideRequest(action=pb.ActionRequest(credential=token, kind="tool.call", name="crm.query",
                                                    arguments_json=json.dumps({"tenant_id": "acme"})))


def test_tls_server_answers_a_client_that_trusts_its_ca(tmp_path: Path, pki: dict[str, bytes]) -> None:
    keys, port = DemoKeys(), free_port()
    cfg = WorkerConfig("127.0.0.1", port, drain_s=0.1, tls_cert=pki["server"], tls_key=pki["server_key"])
    token = keys.token("alice", ["analyst"], "acme")

    async def body() -> tuple[pb.DecideResponse, grpc.StatusCode]:
        options = (("grpc.ssl_target_name_override", "localhost"),)
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"])
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
            ok = await _decide(channel, _action(token))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            try:
                await _decide(plain, _action(token))
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
        return ok, code

    ok, plaintext_code = serve(governor(tmp_path, keys), cfg, body)
    assert (ok.allow, ok.subject.id) == (True, "alice")
    assert plaintext_code == grpc.StatusCode.UNAVAILABLE  # a plaintext client cannot talk to a TLS server


def test_mtls_refuses_a_client_without_a_certificate(tmp_path: Path, pki: dict[str, bytes]) -> None:
    keys, port = DemoKeys(), free_port()
    cfg = WorkerConfig("127.0.0.1", port, drain_s=0.1, tls_cert=pki["server"], tls_key=pki["server_key"],
                       tls_client_ca=pki["ca"])
    token = keys.token("alice", ["analyst"], "acme")
    options = (("grpc.ssl_target_name_override", "localhost"),)

    async def body() -> tuple[grpc.StatusCode, bool, str]:
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki["ca"])
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", anonymous, options=options) as channel:
            try:
                await _decide(channel, _action(token))
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
        # The delegating ext_authz client with its certificate gets through.
        remote = RemoteDecider(f"localhost:{port}", timeout_s=5,
                               tls=RemoteTLS(pki["ca"], pki["client"], pki["client_key"]))
        verdict = await remote.decide(Envelope(
            method="POST", path="/mcp", host="localhost",
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            body=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                             "params": {"name": "crm.query", "arguments": {"tenant_id": "acme"}}}).encode()))
        await remote.close()
        return code, verdict.decision.allow, verdict.subject.id

    code, allowed, subject = serve(governor(tmp_path, keys), cfg, body)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert (allowed, subject) == (True, "alice")


def test_stage_and_api_metrics_are_recorded(tmp_path: Path) -> None:
    keys, port = DemoKeys(), free_port()

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {stage: sample("agentgov_stage_seconds_count", {"stage": stage}) for stage in ("identity", "policy")}
    allowed_before = sample("agentgov_decisions_total", {"api": "decision_service", "outcome": "allow",
                                                         "reason": "tool_granted"})

    async def body() -> pb.DecideResponse:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await _decide(channel, _action(keys.token("alice", ["analyst"], "acme")))

    assert serve(governor(tmp_path, keys), WorkerConfig("127.0.0.1", port, drain_s=0.1), body).allow
    for stage, count in before.items():
        assert sample("agentgov_stage_seconds_count", {"stage": stage}) == count + 1
    assert sample("agentgov_decisions_total", {"api": "decision_service", "outcome": "allow",
                                               "reason": "tool_granted"}) == allowed_before + 1


def test_decision_service_internal_error_is_a_503_deny(tmp_path: Path) -> None:
    keys, port = DemoKeys(), free_port()
    gov = Governor(ExplodingBackend(), verifier(tmp_path, keys))

    async def body() -> pb.DecideResponse:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await _decide(channel, _action(keys.token("alice", ["analyst"], "acme")))

    answer = serve(gov, WorkerConfig("127.0.0.1", port, drain_s=0.1), body)
    assert (answer.allow, answer.status, list(answer.reasons)) == (False, 503, ["internal_error"])
    assert "unexpected" not in str(answer)


def test_remote_decider_fails_closed_when_nobody_answers() -> None:
    async def scenario() -> tuple[bool, int, tuple[str, ...]]:
        remote = RemoteDecider(f"127.0.0.1:{free_port()}", timeout_s=0.3)
        verdict = await remote.decide(Envelope(method="POST", path="/mcp", host="h", headers={}))
        await remote.close()
        return verdict.decision.allow, verdict.decision.status, verdict.decision.reasons

    assert asyncio.run(scenario()) == (False, 503, (REASON_UNAVAILABLE,))


class SlowBackend:
    """Allows after a pause, so a call is in flight when the worker is told to stop."""

    name = "slow"

    def __init__(self, started: asyncio.Event) -> None:
        self.started = started

    async def evaluate(self, policy_input: Any) -> Any:
        self.started.set()
        await asyncio.sleep(0.5)
        return Decision(allow=True, reasons=("slow_ok",), status=200)

    async def explain(self, policy_input: Any) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def test_stop_drains_in_flight_calls_and_reports_not_serving(tmp_path: Path) -> None:
    keys, port = DemoKeys(), free_port()

    async def scenario() -> tuple[pb.DecideResponse, int, grpc.StatusCode]:
        in_flight = asyncio.Event()
        gov = Governor(SlowBackend(in_flight), verifier(tmp_path, keys))
        ready, stop = asyncio.Event(), asyncio.Event()
        cfg = WorkerConfig("127.0.0.1", port, drain_s=5, drain_notice_s=0.3)
        task = asyncio.create_task(run_worker(gov, cfg, ready, stop))
        await ready.wait()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            call = asyncio.create_task(_decide(channel, _action(keys.token("alice", ["analyst"], "acme"))))
            await in_flight.wait()
            stop.set()  # what SIGTERM does

            async def reported() -> int:
                return int((await health.Check(health_pb2.HealthCheckRequest(service=""))).status)

            for _ in range(100):  # health turns NOT_SERVING at once; asked until it says so (at most ~1 s)
                status = await reported()
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.01)
            answer = await call
        await task
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                await _decide(channel, _action("x"))
                after = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                after = exc.code()
        return answer, status, after

    answer, health_status, after = asyncio.run(scenario())
    assert (answer.allow, list(answer.reasons)) == (True, ["slow_ok"])  # the in-flight call finished
    assert health_status == 2  # NOT_SERVING while draining
    assert after == grpc.StatusCode.UNAVAILABLE  # and nothing is served afterwards
