"""One agentgov worker: ext_authz, ext_proc, the decision service and health on one gRPC port, the
OPA Data API and metrics on HTTP ports, drain on SIGTERM.

Envoy keeps one HTTP/2 connection per endpoint, so SO_REUSEPORT would leave all but one worker
idle (docs/architecture.md §4): each worker gets its own gRPC port and is listed as its own
cluster endpoint. The Data API is served by worker 0 alone: a port is never shared, so a second
server on it fails to start instead of silently taking half of the queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from agentgov.engine.gc_pause import serving_started
from agentgov.engine.pipeline import Decider
from agentgov.engine.proto import SERVICE as DECISION_SERVICE
from agentgov.engine.server.approval_status import approval_status_routes
from agentgov.engine.server.authzen import authzen_routes
from agentgov.engine.server.decision_service import DecisionService, add_decision_service
from agentgov.engine.server.ext_authz import AuthorizationService
from agentgov.engine.server.ext_proc import EXT_PROC_SERVICE, ExternalProcessorService
from agentgov.engine.server.http_authz import AuthzHandler, HttpServer
from agentgov.engine.server.memory import MemoryTrimmer

log = logging.getLogger("agentgov.server")
AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
# A decision allocates a few thousand short-lived objects: Python's default (700, 10, 10) runs a
# young-generation collection several times per decision. Measured in docs/benchmarks.md.
GC_THRESHOLDS = (20_000, 20, 20)


@dataclass(frozen=True)
class WorkerConfig:
    host: str
    port: int
    socket_path: str | None = None  # listen on this Unix socket instead of host:port
    metrics_port: int | None = None
    data_api_port: int | None = None
    data_api_host: str = "127.0.0.1"  # the Data API trusts the stated subject: loopback unless configured
    data_api_token: str | None = None  # required as `Authorization: Bearer …` when set
    rule: str = ""
    drain_s: float = 5.0  # how long in-flight calls may take to finish once stopping
    drain_notice_s: float = 0.0  # keep serving this long after reporting NOT_SERVING, so health checks notice
    memory_trim_s: float = 0.0  # hand freed heap back to the OS this often while serving (0: never)
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    tls_client_ca: bytes | None = None
    serve_bundles: bool = False  # the active bundle at /bundles/agentgov on the Data API port
    # Envoy's HTTP ext_authz (http_service) on this port (or Unix socket); None: gRPC only.
    http_port: int | None = None
    http_socket_path: str | None = None
    max_body_bytes: int = 1024 * 1024  # what Envoy sends of a body (with_request_body.max_request_bytes)
    authzen_token: str | None = None  # required as `Authorization: Bearer …` by the AuthZEN API when set


async def run_worker(decider: Decider, cfg: WorkerConfig, ready: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT). A delegating worker (a remote decider) serves
    ext_authz only: the decision service and the Data API need the policies here."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    local = decider.local  # the runner, when decisions are made here; None when they are delegated
    exchange = local is not None and local.options.can_redact
    authz_grpc.add_AuthorizationServicer_to_server(AuthorizationService(decider, exchange=exchange), server)
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessorService(local), server)
    services = ["", AUTHZ_SERVICE, EXT_PROC_SERVICE]
    if local is not None:
        add_decision_service(server, DecisionService(local))
        services.append(DECISION_SERVICE)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{cfg.host}:{cfg.port}"
    if cfg.socket_path:
        _remove_stale_socket(cfg.socket_path)
        address = f"unix:{cfg.socket_path}"
    if cfg.tls_cert and cfg.tls_key:
        creds = grpc.ssl_server_credentials([(cfg.tls_key, cfg.tls_cert)], root_certificates=cfg.tls_client_ca,
                                            require_client_auth=cfg.tls_client_ca is not None)
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot bind {address}")
    http_server, http_handler = None, None
    if cfg.http_port or cfg.http_socket_path:
        http_handler = AuthzHandler(decider, exchange=exchange)
        if local is not None:
            base = f"http://{cfg.host}:{cfg.http_port}" if cfg.http_port else ""
            http_handler.routes.update(authzen_routes(local, token=cfg.authzen_token, base_url=base))
            if local.approvals.store is not None:
                http_handler.routes.update(approval_status_routes(local.approvals.store))
        http_server = HttpServer(http_handler, max_body_bytes=cfg.max_body_bytes)
        if cfg.http_socket_path:
            _remove_stale_socket(cfg.http_socket_path)
        address += f", HTTP ext_authz on {cfg.http_socket_path or f'{cfg.host}:{cfg.http_port}'}"
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr=cfg.host)
    runner = None
    if cfg.data_api_port and local is not None:
        # Imported here: aiohttp (~16 MB per worker) is only for OPA's Data API, which is off by default.
        from aiohttp import web

        from agentgov.engine.server.data_api import create_app

        runner = web.AppRunner(create_app(local, cfg.rule, token=cfg.data_api_token,
                                                serve_bundles=cfg.serve_bundles), access_log=None)
        await runner.setup()
        # No reuse_port: a second agentgov (or anything else) on this port must fail to start, not
        # silently take half of the queries.
        await web.TCPSite(runner, cfg.data_api_host, cfg.data_api_port).start()
    await decider.start()  # e.g. opens the audit log: a log that cannot be opened stops the worker here
    # What is loaded now (policies, compiled engines, libraries) lives as long as the worker: move it
    # out of the collector's reach, so collections under load only walk what requests allocate.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    serving_started()  # reloads from now on build with the collector on (see gc_pause)
    # Both doors open once the decider has started (policy bundle loaded, audit log open): a check
    # that arrived while a bundle was still loading would be refused with 503 policy_unavailable.
    if http_server is not None:
        try:
            await http_server.start(cfg.host, cfg.http_port or 0, socket_path=cfg.http_socket_path,
                                    ssl=_server_ssl(cfg))
        except BaseException:
            await decider.close()  # the audit log it opened is closed cleanly before the worker stops
            raise
    await server.start()
    for service in services:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("agentgov worker serving %s on %s%s", ", ".join(services[1:]), address,
             f", OPA Data API on {cfg.data_api_host}:{cfg.data_api_port}" if runner else "")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    trimmer = MemoryTrimmer(cfg.memory_trim_s)
    trimmer.start()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        trimmer.stop()
    # Drain: report NOT_SERVING so health checks move traffic (still answering meanwhile), then refuse
    # new calls and let in-flight ones finish.
    await health_servicer.enter_graceful_shutdown()
    if http_handler is not None:
        http_handler.serving = False
    if cfg.drain_notice_s > 0:
        await asyncio.sleep(cfg.drain_notice_s)
    if http_server is not None:
        await http_server.stop(cfg.drain_s)
    await server.stop(cfg.drain_s)
    if runner is not None:
        await runner.cleanup()
    await decider.close()
    log.info("agentgov worker on %s stopped", address)


def _server_ssl(cfg: WorkerConfig) -> ssl.SSLContext | None:
    """The HTTP transport's TLS, from the same certificate, key and client CA as the gRPC port."""
    if not (cfg.tls_cert and cfg.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="agentgov-tls-") as folder:  # ssl loads keys from files only
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert.write_bytes(cfg.tls_cert)
        key.write_bytes(cfg.tls_key)
        key.chmod(0o600)
        context.load_cert_chain(cert, key)
    if cfg.tls_client_ca:
        context.load_verify_locations(cadata=cfg.tls_client_ca.decode())
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a worker that died would make bind fail; anything else is not ours to delete."""
    target = Path(path)
    target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if target.is_socket():
        target.unlink()
    elif target.exists():
        raise OSError(f"{path} exists and is not a socket")
