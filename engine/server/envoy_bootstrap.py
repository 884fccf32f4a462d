"""A working Envoy bootstrap: ext_authz with the request body, fail closed, one endpoint per worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


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


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def bootstrap(layout: EnvoyLayout) -> dict[str, Any]:
    ext_authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "include_peer_certificate": True,
            # Partial bodies reach agentgov flagged with x-envoy-auth-partial-body and are denied by default.
            "with_request_body": {"max_request_bytes": layout.max_request_bytes, "allow_partial_message": True,
                                  "pack_as_bytes": True},
            "grpc_service": {"envoy_grpc": {"cluster_name": "agentgov"},
                             "timeout": f"{layout.check_timeout_s}s"},
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "agents",
        "route_config": {"name": "agents", "virtual_hosts": [{
            "name": "backend", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "120s"}}],
        }]},
        "http_filters": [ext_authz, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    agentgov_cluster = {
        "name": "agentgov",
        "type": "STATIC",
        "connect_timeout": "0.25s",
        # Envoy holds one HTTP/2 connection per endpoint: every worker is its own endpoint.
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "agentgov", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(layout.agentgov_host, p)}} for p in layout.agentgov_ports]}]},
    }
    backend_cluster = {
        "name": "backend", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(layout.backend_host, layout.backend_port)}}]}]},
    }
    return {
        "admin": {"address": _address("127.0.0.1", layout.admin_port)},
        "static_resources": {
            "listeners": [{"name": "agents", "address": _address(layout.listen_host, layout.listen_port),
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [agentgov_cluster, backend_cluster],
        },
    }


def bootstrap_yaml(layout: EnvoyLayout) -> str:
    return yaml.safe_dump(bootstrap(layout), sort_keys=False)
