"""The worker over TLS and mTLS, the delegating client over TLS, and the decision service's
fail-closed paths, all in-process through real gRPC."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

from agentgov.cli.stack import DemoKeys, free_port
from agentgov.engine.config import Config, build_backend
from agentgov.engine.governor import Envelope, Governor
from agentgov.engine.proto import DECIDE
from agentgov.engine.proto import decision_pb2 as pb
from agentgov.engine.server.app import WorkerConfig, run_worker
from agentgov.engine.server.decision_client import REASON_UNAVAILABLE, RemoteDecider, RemoteTLS
from tests.conftest import POLICIES
from tests.test_identity_and_server import ExplodingBackend, verifier


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(name: str, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey | None,
           ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """TEST KEYS: a throw-away CA and leaf certificates, generated per run."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(signer or key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    ca, ca_key = _issue("agentgov test CA", None, None, ca=True)
    server, server_key = _issue("localhost", ca.subject, ca_key)
    client, client_key = _issue("envoy-edge", ca.subject, ca_key)
    return {"ca": _pem(ca), "server": _pem(server), "server_key": _key_pem(server_key),
            "client": _pem(client), "client_key": _key_pem(client_key)}


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
