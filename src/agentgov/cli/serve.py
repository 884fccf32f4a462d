"""`agentgov serve`: N worker processes, each serving ext_authz and the decision service on its own
port (base port + i), plus the OPA Data API on a shared port when asked for.

With `--decision-service ADDR` the workers load no policies: every decision is delegated to the
remote agentgov.v1.DecisionService (enforcement points scale apart from decision points).
"""

from __future__ import annotations

import gc
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import uvloop

from agentgov.cli.output import EXIT_ERROR, report_problems
from agentgov.engine.config import (
    Config,
    ConfigError,
    build_governor,
    default_config_path,
    environment,
    resolve,
)
from agentgov.engine.config.unread import unread_results
from agentgov.engine.pipeline import Decider
from agentgov.engine.policy.discovery import discover
from agentgov.engine.policy.problems import PolicyLoadError
from agentgov.engine.server import logsafe
from agentgov.engine.server.app import WorkerConfig, run_worker
from agentgov.engine.server.decision_client import RemoteDecider, RemoteTLS
from agentgov.engine.server.supervisor import Supervisor


def build_decider(cfg: Config) -> Decider:
    if cfg.decision_service:
        ca = cfg.read_tls("ca_file")
        tls = RemoteTLS(ca, cfg.read_tls("cert_file"), cfg.read_tls("key_file")) if ca else None
        return RemoteDecider(cfg.decision_service, timeout_s=float(cfg.decision_service_timeout_s), tls=tls)
    return build_governor(cfg)


def worker_config(cfg: Config, index: int) -> WorkerConfig:
    serving_tls = not cfg.decision_service  # with a remote decision service, tls.* configures the client
    return WorkerConfig(
        host=cfg.host, port=cfg.port + index, socket_path=cfg.socket_path(index),
        metrics_port=cfg.metrics_port + index if cfg.metrics_port else None,
        # One process serves the Data API (worker 0): a port is never shared between processes.
        data_api_port=cfg.data_api_port if index == 0 else None, data_api_host=cfg.data_api_host,
        data_api_token=cfg.data_api_token() if index == 0 else None, rule=cfg.rule,
        drain_s=float(cfg.drain_s), drain_notice_s=float(cfg.drain_notice_s),
        memory_trim_s=float(cfg.memory_trim_s),
        tls_cert=cfg.read_tls("cert_file") if serving_tls else None,
        tls_key=cfg.read_tls("key_file") if serving_tls else None,
        tls_client_ca=cfg.read_tls("client_ca_file"), serve_bundles=cfg.serve_bundles,
        http_port=cfg.http_port + index if cfg.http_port and not cfg.socket_dir else None,
        http_socket_path=cfg.http_socket_path(index), max_body_bytes=cfg.max_request_bytes,
        authzen_token=cfg.data_api_token())


def _worker(cfg: Config, index: int) -> None:
    # A Rust panic in regorus would otherwise capture a backtrace (~100 ms) when RUST_BACKTRACE is set:
    # a bad input must cost one decision, not stall the worker.
    os.environ["RUST_BACKTRACE"] = "0"
    logsafe.configure(f"worker{index}", cfg.log_level)
    cfg = replace(cfg, worker_index=index)  # this worker's own audit chain

    async def main() -> None:
        # The decider is built inside the loop: a remote decider's gRPC channel belongs to it.
        await run_worker(build_decider(cfg), worker_config(cfg, index))

    # uvloop: a faster event loop for the HTTP transport and the Data API (grpc.aio runs on it too).
    uvloop.run(main())


def _process(cfg: Config, index: int) -> None:
    if index == cfg.workers:
        from agentgov.cli.console import serve_console

        serve_console(cfg)
        return
    _worker(cfg, index)


def _check_console(cfg: Config) -> None:
    """The console's settings, sources and browser assets, checked before any process starts."""
    if cfg.console is None:
        return
    from agentgov.cli.console import console_settings_of
    from agentgov.console.app import ConsoleAssetsMissing, check_assets
    from agentgov.console.settings import ConsoleConfigError
    from agentgov.console.views import sources_from

    try:
        console_settings_of(cfg)
        sources_from(cfg)
        check_assets()
    except (ConsoleConfigError, ConsoleAssetsMissing) as exc:
        raise ConfigError(f"console: {exc}") from None


def _check_free(cfg: Config) -> None:
    """Every address the workers will bind, tried in the parent: one clear line instead of one
    traceback per worker after a timeout."""
    wanted: list[tuple[str, int, str]] = []
    for i in range(cfg.workers):
        if not cfg.socket_dir:
            wanted.append((cfg.host, cfg.port + i, f"worker {i}'s port"))
            if cfg.http_port:
                wanted.append((cfg.host, cfg.http_port + i, f"worker {i}'s HTTP ext_authz port"))
        if cfg.metrics_port:
            wanted.append((cfg.host, cfg.metrics_port + i, f"worker {i}'s metrics port"))
    if cfg.data_api_port:
        wanted.append((cfg.data_api_host, cfg.data_api_port, "the Data API port"))
    if cfg.console and cfg.console.get("port"):
        wanted.append((str(cfg.console.get("host", "127.0.0.1")), int(cfg.console["port"]), "the console port"))
    for host, port, what in wanted:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As the real listeners do (asyncio and gRPC set SO_REUSEADDR): connections from Envoy left in
            # TIME_WAIT by a server just stopped must not fail the check for a minute.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError(f"{what} {host}:{port} is not available: {exc.strerror}") from None
    for i in range(cfg.workers if cfg.socket_dir else 0):
        path = cfg.socket_path(i)
        if path and Path(path).is_socket():
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(path) == 0:
                    raise ConfigError(f"worker {i}'s socket {path} is in use by a running server")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG",
              help="agentgov.yaml [default: ./agentgov.yaml if there is one]. Every key can also be set by an "
                   "AGENTGOV_* variable (docs/configuration.md); flags win over both.")
@click.option("--host", help="[server.host, AGENTGOV_HOST]")
@click.option("--port", type=int, help="First worker's port; worker i listens on port+i. [server.port, AGENTGOV_PORT]")
@click.option("--http-port", type=int,
              help="First worker's HTTP ext_authz port (worker i: http-port+i); 0: gRPC only. [default: 9292]")
@click.option("--workers", type=int, help="[server.workers, AGENTGOV_WORKERS]")
@click.option("--socket-dir", help="Listen on Unix sockets DIR/agentgov-<i>.sock instead of TCP ports.")
@click.option("--metrics-port", type=int)
@click.option("--data-api-port", type=int, help="Serve OPA's Data API (POST /v1/data/…) here, shared by all workers.")
@click.option("--engine", help="rego, cedar or opa. [policy.engine, AGENTGOV_ENGINE]")
@click.option("--input-format", help="opa-envoy: run OPA-Envoy plugin policies unchanged.")
@click.option("--rule", help="Decision rule (default data.agentgov.decision, "
                             "or data.envoy.authz.allow with --input-format opa-envoy).")
@click.option("--policies", "policy_paths", multiple=True, help="[policy.paths, AGENTGOV_POLICIES]")
@click.option("--log-level", help="Operational log level (JSON lines on stderr): debug, info, warning, error. "
                                  "[default: server.log_level, or info]")
@click.option("--decision-service", metavar="ADDR",
              help="Delegate every decision to this remote agentgov decision service (gRPC target).")
@click.option("--bundle", "bundle_source", metavar="SOURCE",
              help="Load and keep reloading the policies from a bundle: oci://…, http(s)://…, a .tar.gz or a "
                   "folder (policy.bundle in agentgov.yaml configures keys and polling).")
@click.option("--shadow", "shadow_source", metavar="SOURCE",
              help="Evaluate this candidate bundle beside the active policies on live traffic, never "
                   "enforcing it; flips are counted and audited (agentgov shadow report).")
def serve(config_path: Path | None, host: str | None, port: int | None, http_port: int | None, workers: int | None,
          socket_dir: str | None,
          metrics_port: int | None, data_api_port: int | None, engine: str | None, input_format: str | None,
          rule: str | None, policy_paths: tuple[str, ...], log_level: str | None, decision_service: str | None,
          bundle_source: str | None, shadow_source: str | None) -> None:
    """Run the Envoy external authorizer (ext_authz gRPC) and the decision service."""
    flags: dict[str, tuple[str, Any]] = {
        "server.host": ("--host", host), "server.port": ("--port", port), "server.http_port": ("--http-port", http_port),
        "server.workers": ("--workers", workers), "server.socket_dir": ("--socket-dir", socket_dir),
        "server.metrics_port": ("--metrics-port", metrics_port),
        "server.data_api_port": ("--data-api-port", data_api_port), "policy.engine": ("--engine", engine),
        "policy.input_format": ("--input-format", input_format), "policy.rule": ("--rule", rule),
        "policy.paths": ("--policies", list(policy_paths) or None), "server.log_level": ("--log-level", log_level),
        "server.decision_service": ("--decision-service", decision_service),
        # A source named here keeps the configured section's keys and polling (policy.bundle.*).
        "policy.bundle.source": ("--bundle", bundle_source), "policy.shadow.source": ("--shadow", shadow_source),
    }
    try:
        cfg = resolve(config_path or default_config_path(), environment(), flags)
        if cfg.serve_bundles and not cfg.data_api_port:
            raise ConfigError("server.serve_bundles needs server.data_api_port (bundles are served there)")
        # Fail fast, in the parent, with a readable error (and, delegating, with no policies loaded).
        if cfg.decision_service:
            cfg.read_tls("ca_file")
        else:
            build_governor(cfg)
            # Freed here, on this thread: regorus engines must be dropped on the thread that made them.
            gc.collect()
            if cfg.bundle is None:
                for warning in unread_results(cfg, discover([cfg.base / p for p in cfg.paths])):
                    click.echo(f"warning: {warning}", err=True)
        worker_config(cfg, 0)
        _check_console(cfg)
        _check_free(cfg)
    except PolicyLoadError as exc:
        report_problems(exc, "pretty")
        raise SystemExit(EXIT_ERROR) from None
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    if cfg.workers == 1 and cfg.console is None:
        # One worker: this process is the worker; the platform's restart policy is its supervisor.
        _worker(cfg, 0)
        return
    logsafe.configure("supervisor", cfg.log_level)
    # The console (when configured) is one more supervised process, after the workers.
    processes = cfg.workers + (1 if cfg.console is not None else 0)
    supervisor = Supervisor(_process, (cfg,), processes, stop_timeout_s=float(cfg.drain_s) + 5)
    sys.exit(supervisor.run())
