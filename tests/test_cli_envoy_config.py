"""`agentgov envoy-config`: every option yields a bootstrap the real Envoy accepts, and bad
combinations are usage errors (exit 1, the CLI contract, not click's 2)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from agentgov.cli.stack import envoy_binary
from tests.pki import write_pki


def _filters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP filters after the client-address filter, which always comes first (see below)."""
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters: list[dict[str, Any]] = hcm["http_filters"]
    assert filters[0]["name"] == "envoy.filters.http.header_mutation"
    return filters[1:]


@pytest.mark.parametrize("hops", [0, 2])
def test_the_edge_is_safe_by_default(run_cli: Callable[..., Result], hops: int) -> None:
    """The client's address is the connection's peer (or what trusted proxies appended), headers that
    claim an address are dropped before ext_authz reads the request, and a second Envoy cannot bind
    the same listener port (a stale one from an earlier run would take part of the traffic)."""
    doc = yaml.safe_load(run_cli("envoy-config", "--xff-num-trusted-hops", str(hops)).output)
    listener = doc["static_resources"]["listeners"][0]
    assert listener["enable_reuse_port"] is False
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["use_remote_address"] is True
    assert hcm["xff_num_trusted_hops"] == hops
    mutations = hcm["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]
    removed = {m["remove"] for m in mutations if "remove" in m}
    assert {"x-real-ip", "forwarded"} <= removed
    xff = [m["append"] for m in mutations if "append" in m]
    if hops == 0:
        assert xff == [{"header": {"key": "x-forwarded-for", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    else:
        assert xff == []  # behind trusted proxies their X-Forwarded-For is kept (Envoy appends its hop)


def _agentgov_cluster(doc: dict[str, Any], name: str = "agentgov_http") -> dict[str, Any]:
    cluster: dict[str, Any] = next(c for c in doc["static_resources"]["clusters"] if c["name"] == name)
    return cluster


def _clusters(doc: dict[str, Any]) -> list[str]:
    return [c["name"] for c in doc["static_resources"]["clusters"]]


def _validate_with_envoy(tmp_path: Path, text: str) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.envoy
@pytest.mark.parametrize("flags", [
    [],
    ["--transport", "grpc"],
    ["--ext-proc", "--workers", "2"],
    ["--workers", "3", "--mcp-filter"],
    ["--mcp-filter", "--no-request-body", "--ext-proc"],
    ["--agentgov-socket-dir", "/run/agentgov", "--workers", "2"],
    ["--agentgov-socket-dir", "/run/agentgov", "--transport", "grpc"],
    ["--tls-ca", "{ca}", "--tls-cert", "{client_cert}", "--tls-key", "{client_key}", "--tls-server-name", "agentgov"],
    ["--tls-ca", "{ca}", "--transport", "grpc"],
])
def test_every_option_validates_with_the_real_envoy(tmp_path: Path, run_cli: Callable[..., Result],
                                                    flags: list[str]) -> None:
    files = write_pki(tmp_path)  # Envoy checks that certificate files exist and parse
    result = run_cli("envoy-config", *(f.format(**files) for f in flags))
    assert result.exit_code == 0, result.output
    _validate_with_envoy(tmp_path, result.output)


def test_defaults_fail_closed_with_the_body(run_cli: Callable[..., Result]) -> None:
    doc = yaml.safe_load(run_cli("envoy-config", "--workers", "2").output)
    [authz, router] = _filters(doc)
    config = authz["typed_config"]
    assert config["failure_mode_allow"] is False
    assert config["status_on_error"] == {"code": 503}
    assert config["with_request_body"]["allow_partial_message"] is True
    assert router["name"] == "envoy.filters.http.router"
    # The HTTP transport by default: every request header to agentgov, the body as it is (not packed).
    assert config["http_service"]["path_prefix"] == "/ext_authz"
    assert config["allowed_headers"] == {"patterns": [{"safe_regex": {"regex": ".*"}}]}
    assert "pack_as_bytes" not in config["with_request_body"]
    assert _clusters(doc) == ["agentgov_http", "backend"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in _agentgov_cluster(doc)["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert ports == [9292, 9293]
    grpc = yaml.safe_load(run_cli("envoy-config", "--workers", "2", "--transport", "grpc").output)
    assert _clusters(grpc) == ["agentgov", "backend"]
    assert _filters(grpc)[0]["typed_config"]["with_request_body"]["pack_as_bytes"] is True
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in _agentgov_cluster(grpc, "agentgov")["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert ports == [9191, 9192]


def test_auto_picks_grpc_where_only_grpc_carries_what_is_needed(run_cli: Callable[..., Result],
                                                                tmp_path: Path) -> None:
    mcp = yaml.safe_load(run_cli("envoy-config", "--mcp-filter").output)
    assert "grpc_service" in _filters(mcp)[1]["typed_config"]
    config = tmp_path / "agentgov.yaml"
    config.write_text("policy: {input_format: opa-envoy}\n")
    opa_envoy = yaml.safe_load(run_cli("envoy-config", "--config", str(config)).output)
    assert "grpc_service" in _filters(opa_envoy)[0]["typed_config"]
    # ext_proc works with either: over HTTP the exchange document becomes dynamic metadata.
    ext_proc = yaml.safe_load(run_cli("envoy-config", "--ext-proc").output)
    authz = _filters(ext_proc)[0]["typed_config"]
    assert authz["http_service"]["authorization_response"]["dynamic_metadata_from_headers"] == {
        "patterns": [{"exact": "agentgov-exchange"}]}
    assert _clusters(ext_proc) == ["agentgov_http", "agentgov", "backend"]
    refused = run_cli("envoy-config", "--mcp-filter", "--transport", "http")
    assert refused.exit_code == 1
    assert "--mcp-filter needs the gRPC transport" in refused.output


def test_optional_filters_are_placed_around_ext_authz(run_cli: Callable[..., Result]) -> None:
    doc = yaml.safe_load(run_cli("envoy-config", "--mcp-filter", "--ext-proc", "--no-request-body").output)
    names = [f["name"] for f in _filters(doc)]
    assert names == ["envoy.filters.http.mcp", "envoy.filters.http.ext_authz", "envoy.filters.http.ext_proc",
                     "envoy.filters.http.router"]
    authz = _filters(doc)[1]["typed_config"]
    assert authz["metadata_context_namespaces"] == ["envoy.filters.http.mcp"]
    assert "with_request_body" not in authz
    assert _filters(doc)[2]["typed_config"]["failure_mode_allow"] is False


def test_unix_sockets_and_tls(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    doc = yaml.safe_load(run_cli("envoy-config", "--agentgov-socket-dir", str(tmp_path), "--workers", "2").output)
    paths = [e["endpoint"]["address"]["pipe"]["path"]
             for e in _agentgov_cluster(doc)["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert paths == [str(tmp_path / "agentgov-http-0.sock"), str(tmp_path / "agentgov-http-1.sock")]
    doc = yaml.safe_load(run_cli("envoy-config", "--agentgov-socket-dir", str(tmp_path), "--transport", "grpc").output)
    paths = [e["endpoint"]["address"]["pipe"]["path"]
             for e in _agentgov_cluster(doc, "agentgov")["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert paths == [str(tmp_path / "agentgov-0.sock")]
    doc = yaml.safe_load(run_cli("envoy-config", "--tls-ca", "ca.pem").output)
    tls = _agentgov_cluster(doc)["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["validation_context"]["trusted_ca"] == {"filename": "ca.pem"}
    assert tls["alpn_protocols"] == ["http/1.1"]
    assert "tls_certificates" not in tls


@pytest.mark.parametrize(("flags", "message"), [
    (["--backend", "nope"], "expected host:port"),
    (["--tls-ca", "ca.pem", "--tls-cert", "c.pem"], "both --tls-cert and --tls-key"),
    (["--tls-cert", "c.pem", "--tls-key", "k.pem"], "needs --tls-ca"),
    (["--workers", "0"], "--workers"),
    (["--no-such-flag"], "No such option"),
])
def test_usage_errors_exit_1(run_cli: Callable[..., Result], flags: list[str], message: str) -> None:
    result = run_cli("envoy-config", *flags)
    assert result.exit_code == 1
    assert message in result.output
