"""A working Envoy bootstrap: ext_authz with the request body, fail closed, one endpoint per worker."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import yaml

from agentgov.engine.server.exchange import EXCHANGE_HEADER
from agentgov.engine.server.http_authz import (
    CLIENT_ON_SUCCESS_PREFIX,
    EXT_AUTHZ_PREFIX,
    SOURCE_IP_HEADER,
    UPSTREAM_PREFIX,
)


@dataclass(frozen=True)
class EnvoyLayout:
    listen_port: int
    admin_port: int
    backend_host: str
    backend_port: int
    agentgov_host: str
    agentgov_ports: tuple[int, ...]
    max_request_bytes: int = 1024 * 1024
    check_timeout_s: float = 0.5
    listen_host: str = "127.0.0.1"
    # Envoy's MCP filter parses JSON-RPC into dynamic metadata, which ext_authz forwards to agentgov.
    mcp_filter: bool = False
    # Without the body agentgov decides MCP calls from the MCP filter's metadata alone.
    send_body: bool = True
    # Unix socket paths of the workers; when given they replace agentgov_host/agentgov_ports.
    agentgov_sockets: tuple[str, ...] = ()
    # TLS to agentgov: the CA that signed agentgov's certificate, and Envoy's own for mTLS.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_server_name: str | None = None
    # Envoy's ext_proc filter after ext_authz: agentgov meters LLM token usage from the responses.
    ext_proc: bool = False
    ext_proc_timeout_s: float = 0.5
    # "http": ext_authz over Envoy's http_service to each worker's HTTP port (the fast default);
    # "grpc": the gRPC service (needed for the MCP filter's metadata and OPA-Envoy mode).
    transport: str = "http"
    agentgov_http_ports: tuple[int, ...] = ()
    agentgov_http_sockets: tuple[str, ...] = ()
    # Proxies in front of this Envoy whose X-Forwarded-For entries are trusted (0: this Envoy is the edge,
    # and the client's address is the peer of the connection, whatever headers it sent).
    xff_num_trusted_hops: int = 0


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


MCP_FILTER_NAMESPACE = "envoy.filters.http.mcp"


def _http_service(layout: EnvoyLayout) -> dict[str, Any]:
    """Envoy's HTTP ext_authz: every request header goes to agentgov, with the client's address in
    a header Envoy sets (overwriting any a client sent); an allow's `x-*` headers are set on the
    request to the backend, its `ratelimit-*` ones go to the client, and the exchange document for
    ext_proc becomes dynamic metadata; a deny's status, body and headers go to the client."""
    response: dict[str, Any] = {
        "allowed_upstream_headers": {"patterns": [{"prefix": UPSTREAM_PREFIX}]},
        "allowed_client_headers": {"patterns": [{"prefix": "x-agentgov-"}, {"exact": "content-type"},
                                                {"exact": "retry-after"}, {"prefix": "ratelimit-"}]},
        "allowed_client_headers_on_success": {"patterns": [{"prefix": CLIENT_ON_SUCCESS_PREFIX}]},
    }
    if layout.ext_proc:
        response["dynamic_metadata_from_headers"] = {"patterns": [{"exact": EXCHANGE_HEADER}]}
    return {
        "server_uri": {"uri": "http://agentgov", "cluster": "agentgov_http", "timeout": f"{layout.check_timeout_s}s"},
        "path_prefix": EXT_AUTHZ_PREFIX,
        "authorization_request": {"headers_to_add": [
            {"key": SOURCE_IP_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}]},
        "authorization_response": response,
    }


# Headers a client could use to claim another address: removed before anything reads the request.
SPOOFABLE_ADDRESS_HEADERS = ("x-real-ip", "forwarded", "x-client-ip", "true-client-ip", "cf-connecting-ip",
                             "x-cluster-client-ip", "x-original-forwarded-for")


def _client_address_filter(layout: EnvoyLayout) -> dict[str, Any]:
    """Envoy's header_mutation filter, ahead of ext_authz: headers that claim a client address are
    dropped, and at the edge (no trusted hops) X-Forwarded-For is set to the connection's peer alone,
    so agentgov, the policy and the backend all read the address Envoy trusts. Behind trusted proxies
    X-Forwarded-For is kept as they wrote it, with Envoy's hop appended (use_remote_address)."""
    mutations: list[dict[str, Any]] = [{"remove": name} for name in SPOOFABLE_ADDRESS_HEADERS]
    if layout.xff_num_trusted_hops == 0:
        mutations.append({"append": {"header": {"key": "x-forwarded-for",
                                                "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}})
    return {"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": mutations}}}


def bootstrap(layout: EnvoyLayout) -> dict[str, Any]:
    if layout.transport not in ("http", "grpc"):
        raise ValueError("transport must be http or grpc")
    http = layout.transport == "http"
    if http and layout.mcp_filter:
        raise ValueError("the MCP filter's metadata reaches agentgov over the gRPC transport only")
    authz_config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": 503},
    }
    if http:
        authz_config["http_service"] = _http_service(layout)
        authz_config["allowed_headers"] = {"patterns": [{"safe_regex": {"regex": ".*"}}]}
    else:
        authz_config["include_peer_certificate"] = True
        authz_config["grpc_service"] = {"envoy_grpc": {"cluster_name": "agentgov"},
                                        "timeout": f"{layout.check_timeout_s}s"}
    if layout.send_body:
        # Partial bodies reach agentgov flagged with x-envoy-auth-partial-body and are denied by default.
        # The HTTP transport sends the body as it is (pack_as_bytes would leave it out there).
        authz_config["with_request_body"] = {"max_request_bytes": layout.max_request_bytes,
                                             "allow_partial_message": True, **({} if http else {"pack_as_bytes": True})}
    # First filter: the client's address, one reading for agentgov, the policy and the backend.
    filters: list[dict[str, Any]] = [_client_address_filter(layout)]
    if layout.mcp_filter:
        authz_config["metadata_context_namespaces"] = [MCP_FILTER_NAMESPACE]
        # By default the filter keeps only params.name; policies need the arguments too (rules for a
        # method replace the default, so name and uri are listed again).
        extract = {"tools/call": ["params.name", "params.arguments"], "prompts/get": ["params.name", "params.arguments"],
                   "resources/read": ["params.uri"]}
        filters.append({"name": MCP_FILTER_NAMESPACE, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp",
            "max_request_body_size": layout.max_request_bytes,
            "parser_config": {"methods": [
                {"method": method, "extraction_rules": [{"path": p} for p in paths]}
                for method, paths in extract.items()]}}})
    filters.append({"name": "envoy.filters.http.ext_authz", "typed_config": authz_config})
    if layout.ext_proc:
        # After ext_authz, so it sees the identity headers and the metadata ext_authz set (what was
        # decided, what to redact). Per exchange agentgov overrides the mode: the request body is
        # sent only when it must be redacted; responses it neither inspects nor meters are skipped;
        # JSON answers are buffered (a verdict needs all of it), event streams flow chunk by chunk.
        filters.append({"name": "envoy.filters.http.ext_proc", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "agentgov"}},
            "failure_mode_allow": False,
            "allow_mode_override": True,
            "metadata_options": {"forwarding_namespaces": {"untyped": ["envoy.filters.http.ext_authz"]}},
            "message_timeout": f"{layout.ext_proc_timeout_s}s",
            "processing_mode": {"request_header_mode": "SEND", "response_header_mode": "SEND",
                                "request_body_mode": "NONE", "response_body_mode": "STREAMED",
                                "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}}})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "agents",
        # One reading of the path: Envoy normalises it (RFC 3986 dot segments, merged slashes) before
        # ext_authz sees it and the backend gets it, and refuses encoded slashes, which backends split
        # differently. Headers with underscores are dropped: some backends map `_` to `-`, which would
        # let `x_agentgov_subject` pass as `x-agentgov-subject` behind agentgov's back.
        "normalize_path": True,
        "merge_slashes": True,
        # The client's address is the connection's peer (or, behind `xff_num_trusted_hops` trusted
        # proxies, what the nearest of them reported): never what a client writes in X-Forwarded-For.
        "use_remote_address": True,
        "xff_num_trusted_hops": layout.xff_num_trusted_hops,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"},
        "route_config": {"name": "agents", "virtual_hosts": [{
            "name": "backend", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "120s"}}],
        }]},
        "http_filters": [*filters, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    agentgov_cluster = {
        "name": "agentgov",
        "type": "STATIC",
        "connect_timeout": "0.25s",
        # Envoy holds one HTTP/2 connection per endpoint: every worker is its own endpoint.
        "lb_policy": "ROUND_ROBIN",
        # A worker that dies (and is restarted by `agentgov serve`) is taken out of rotation within about
        # a second: gRPC health checks every second, and outlier detection on connection failures at once.
        "health_checks": [{"timeout": "0.5s", "interval": "1s", "no_traffic_interval": "1s",
                           "unhealthy_threshold": 1, "healthy_threshold": 1,
                           "grpc_health_check": {"service_name": "envoy.service.auth.v3.Authorization"}}],
        "outlier_detection": {"split_external_local_origin_errors": True, "consecutive_local_origin_failure": 1,
                              "consecutive_5xx": 3, "interval": "1s", "base_ejection_time": "2s",
                              "max_ejection_percent": 100},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "agentgov", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": a}} for a in _agentgov_addresses(layout)]}]},
    }
    http_cluster = {
        "name": "agentgov_http", "type": "STATIC", "connect_timeout": "0.25s", "lb_policy": "ROUND_ROBIN",
        "health_checks": [{"timeout": "0.5s", "interval": "1s", "no_traffic_interval": "1s",
                           "unhealthy_threshold": 1, "healthy_threshold": 1, "http_health_check": {"path": "/health"}}],
        "outlier_detection": agentgov_cluster["outlier_detection"],
        "load_assignment": {"cluster_name": "agentgov_http", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": a}} for a in _agentgov_http_addresses(layout)]}]},
    }
    if layout.tls_ca_file:
        for cluster, alpn in ((agentgov_cluster, "h2"), (http_cluster, "http/1.1")):
            tls: dict[str, Any] = {"validation_context": {"trusted_ca": {"filename": layout.tls_ca_file}},
                                   "alpn_protocols": [alpn]}
            if layout.tls_cert_file and layout.tls_key_file:
                tls["tls_certificates"] = [{"certificate_chain": {"filename": layout.tls_cert_file},
                                            "private_key": {"filename": layout.tls_key_file}}]
            cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": tls, **({"sni": layout.tls_server_name} if layout.tls_server_name else {})}}
    backend_cluster = {
        # A name (a Kubernetes Service) is resolved by DNS; an address is used as it is.
        "name": "backend", "type": "STATIC" if _is_address(layout.backend_host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(layout.backend_host, layout.backend_port)}}]}]},
    }
    return {
        "admin": {"address": _address("127.0.0.1", layout.admin_port)},
        "static_resources": {
            # enable_reuse_port off: a second Envoy (a stale one from an earlier run) must fail to bind
            # this port, not silently take part of the traffic.
            "listeners": [{"name": "agents", "address": _address(layout.listen_host, layout.listen_port),
                           "enable_reuse_port": False,
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            # The gRPC cluster serves ext_proc, and ext_authz with the gRPC transport.
            "clusters": [*([http_cluster] if http else []), *([agentgov_cluster] if not http or layout.ext_proc else []),
                         backend_cluster],
        },
    }


def _agentgov_addresses(layout: EnvoyLayout) -> list[dict[str, Any]]:
    if layout.agentgov_sockets:
        return [{"pipe": {"path": path}} for path in layout.agentgov_sockets]
    return [_address(layout.agentgov_host, p) for p in layout.agentgov_ports]


def _agentgov_http_addresses(layout: EnvoyLayout) -> list[dict[str, Any]]:
    if layout.agentgov_http_sockets:
        return [{"pipe": {"path": path}} for path in layout.agentgov_http_sockets]
    return [_address(layout.agentgov_host, p) for p in layout.agentgov_http_ports]


def bootstrap_yaml(layout: EnvoyLayout) -> str:
    return yaml.safe_dump(bootstrap(layout), sort_keys=False)
