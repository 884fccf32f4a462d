"""`agentgov envoy-config`: print an Envoy bootstrap with agentgov as the external authorizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agentgov.cli.output import EXIT_ERROR
from agentgov.engine.config import (
    ConfigError,
    default_config_path,
    environment,
    resolve,
    worker_http_socket,
    worker_socket,
)
from agentgov.engine.server.envoy_bootstrap import EnvoyLayout, bootstrap_yaml


@click.command("envoy-config")
@click.option("--listen-port", type=int, default=10000, show_default=True)
@click.option("--listen-host", default="127.0.0.1", show_default=True,
              help="Where Envoy accepts agents' requests (0.0.0.0 in a container).")
@click.option("--admin-port", type=int, default=9901, show_default=True)
@click.option("--backend", default="127.0.0.1:8081", show_default=True, help="host:port of the protected backend.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), envvar="AGENTGOV_CONFIG",
              help="Read agentgov's host, port, workers, socket_dir and ext_proc from this agentgov.yaml "
                   "(default: ./agentgov.yaml if there is one), so Envoy lists exactly the workers serve starts.")
@click.option("--agentgov-host", default=None, help="[default: server.host, or 127.0.0.1]")
@click.option("--agentgov-port", type=int, default=None, help="First worker's port. [default: server.port, or 9191]")
@click.option("--workers", type=int, default=None,
              help="One cluster endpoint per worker (port, port+1, …). [default: server.workers, or 1]")
@click.option("--max-request-bytes", type=int, default=None, help="[default: server.max_request_bytes, or 1 MiB]")
@click.option("--timeout", "timeout_s", type=float, default=0.5, show_default=True, help="Check timeout (s).")
@click.option("--agentgov-socket-dir", type=click.Path(file_okay=False),
              help="Workers listen on Unix sockets DIR/agentgov-<i>.sock (serve --socket-dir) instead of ports.")
@click.option("--tls-ca", type=click.Path(dir_okay=False), help="CA that signed agentgov's certificate: TLS to agentgov.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Envoy's client certificate, for mTLS.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Envoy's client key, for mTLS.")
@click.option("--tls-server-name", help="SNI to send to agentgov.")
@click.option("--ext-proc", is_flag=True, default=None,
              help="Add Envoy's ext_proc filter: redaction of request bodies, inspection of tool results and model "
                   "output, tools/list filtering, token metering (set server.ext_proc: true in agentgov.yaml too).")
@click.option("--mcp-filter", is_flag=True,
              help="Put Envoy's MCP filter first and forward its metadata to agentgov (Envoy >= 1.37).")
@click.option("--transport", type=click.Choice(["auto", "http", "grpc"]), default="auto", show_default=True,
              help="How Envoy asks agentgov: http (Envoy's http_service, the fast path) or grpc. auto: http, "
                   "except with --mcp-filter or policy.input_format opa-envoy, which need what only gRPC carries.")
@click.option("--agentgov-http-port", type=int, default=None,
              help="First worker's HTTP ext_authz port. [default: server.http_port, or 9292]")
@click.option("--xff-num-trusted-hops", type=click.IntRange(0, 16), default=0, show_default=True,
              help="Proxies in front of Envoy whose X-Forwarded-For entries are trusted (0: Envoy is the edge; "
                   "the client's address is the connection's peer).")
@click.option("--no-request-body", is_flag=True,
              help="Do not send bodies to agentgov (with --mcp-filter, MCP calls are read from the metadata).")
def envoy_config(listen_port: int, listen_host: str, admin_port: int, backend: str, config_path: Path | None,
                 agentgov_host: str | None, agentgov_port: int | None, workers: int | None,
                 max_request_bytes: int | None, timeout_s: float, agentgov_socket_dir: str | None, tls_ca: str | None,
                 tls_cert: str | None, tls_key: str | None, tls_server_name: str | None, ext_proc: bool | None,
                 mcp_filter: bool, transport: str, agentgov_http_port: int | None, xff_num_trusted_hops: int,
                 no_request_body: bool) -> None:
    """Print a working Envoy bootstrap: ext_authz with request body, fail closed, 503 on error."""
    # The same resolver as `serve` (file, AGENTGOV_* variables, flags), so both agree on the workers.
    flags: dict[str, tuple[str, Any]] = {
        "server.host": ("--agentgov-host", agentgov_host), "server.port": ("--agentgov-port", agentgov_port),
        "server.workers": ("--workers", workers), "server.max_request_bytes": ("--max-request-bytes", max_request_bytes),
        "server.socket_dir": ("--agentgov-socket-dir", agentgov_socket_dir), "server.ext_proc": ("--ext-proc", ext_proc),
        "server.http_port": ("--agentgov-http-port", agentgov_http_port)}
    try:
        cfg = resolve(config_path or default_config_path(), environment(), flags)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from None
    agentgov_host, agentgov_port, workers = cfg.host, cfg.port, cfg.workers
    max_request_bytes, ext_proc = cfg.max_request_bytes, cfg.ext_proc
    agentgov_socket_dir = str(cfg.base / cfg.socket_dir) if cfg.socket_dir else None
    host, _, port = backend.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected host:port", param_hint="--backend")
    if bool(tls_cert) != bool(tls_key):
        raise click.BadParameter("give both --tls-cert and --tls-key, or neither", param_hint="--tls-cert")
    if tls_cert and not tls_ca:
        raise click.BadParameter("mTLS needs --tls-ca too", param_hint="--tls-ca")
    sockets = tuple(worker_socket(Path(agentgov_socket_dir).resolve(), i)
                    for i in range(workers)) if agentgov_socket_dir else ()
    http_port = cfg.http_port
    chosen = choose_transport(transport, mcp_filter=mcp_filter, input_format=cfg.input_format, http_port=http_port)
    http_sockets = tuple(worker_http_socket(Path(agentgov_socket_dir).resolve(), i)
                         for i in range(workers)) if agentgov_socket_dir and chosen == "http" else ()
    click.echo(bootstrap_yaml(EnvoyLayout(
        listen_port=listen_port, listen_host=listen_host, admin_port=admin_port, backend_host=host, backend_port=int(port),
        agentgov_host=agentgov_host, agentgov_ports=tuple(range(agentgov_port, agentgov_port + workers)),
        max_request_bytes=max_request_bytes, check_timeout_s=timeout_s, mcp_filter=mcp_filter,
        send_body=not no_request_body, agentgov_sockets=sockets, tls_ca_file=tls_ca, tls_cert_file=tls_cert,
        tls_key_file=tls_key, tls_server_name=tls_server_name, ext_proc=ext_proc, transport=chosen,
        agentgov_http_ports=tuple(range(http_port, http_port + workers)), agentgov_http_sockets=http_sockets,
        xff_num_trusted_hops=xff_num_trusted_hops)))


def choose_transport(wanted: str, *, mcp_filter: bool, input_format: str, http_port: int) -> str:
    """http unless something needs gRPC: the MCP filter's metadata and OPA-Envoy mode's full
    attributes and directives reach agentgov over gRPC only; http_port 0 turns HTTP off."""
    needs_grpc = mcp_filter or input_format == "opa-envoy" or not http_port
    if wanted == "auto":
        return "grpc" if needs_grpc else "http"
    if wanted == "http" and needs_grpc:
        why = "--mcp-filter" if mcp_filter else "opa-envoy mode" if input_format == "opa-envoy" else "http_port 0"
        raise click.BadParameter(f"{why} needs the gRPC transport", param_hint="--transport")
    return wanted
