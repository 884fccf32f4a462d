"""OPA's Data API in `agentgov serve`: loopback by default, optional bearer token, bodies read as
strictly as at the gateway, and one process per port (a second instance fails to start)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgov.cli.stack import LocalStack, free_ports
from tests.conftest import POLICIES
from tests.http_helpers import post, request

TOKEN = "test-token-0123456789abcdef"  # TEST VALUE
STATED = {"input": {"subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
                    "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"},
                    "arguments": {"tenant_id": "acme"}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(policies=POLICIES, workers=2, data_api=True)
    (s.workdir / "data-api.token").write_text(TOKEN + "\n")
    s.server_extra = {"data_api_token_file": "data-api.token"}
    with s:
        yield s


def url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.data_api_port}/v1/data/agentgov/decision"


@pytest.mark.envoy
def test_a_token_is_required_when_configured(stack: LocalStack) -> None:
    assert post(url(stack), STATED)[0] == 401
    status, _, body = post(url(stack), STATED, {"authorization": "Bearer wrong-token-wrong-token"})
    assert (status, body["code"]) == (401, "unauthorized")
    status, _, body = post(url(stack), STATED, {"authorization": f"Bearer {TOKEN}"})
    assert (status, body["result"]["allow"]) == (200, True)


@pytest.mark.envoy
@pytest.mark.parametrize(("raw", "status", "message"), [
    (b'{"input": {"a": 1, "a": 2}}', 400, "repeats a key"),
    (b'{"input": ' + b"[" * 200 + b"]" * 200 + b"}", 400, "nested too deeply"),
    (b'{"input": {"n": NaN}}', 400, "NaN or Infinity"),
    (b"{" + b'"x": "' + b"a" * (1024 * 1024 + 10) + b'"}', 413, "larger than"),
    (b"[1, 2]", 400, "must be an object with an `input` document"),
])
def test_bodies_are_read_strictly(stack: LocalStack, raw: bytes, status: int, message: str) -> None:
    got, _, body = request(url(stack), "POST", headers={"authorization": f"Bearer {TOKEN}"}, raw=raw)
    assert got == status
    assert message in json.loads(body)["message"]


@pytest.mark.envoy
def test_one_process_serves_the_port(stack: LocalStack) -> None:
    """The workers do not share the Data API port; a second server on it fails with one line."""
    config = stack.workdir / "agentgov.yaml"
    grpc_ports = free_ports(stack.workers)  # each worker listens on port + i
    http_ports = free_ports(stack.workers, taken=grpc_ports)
    proc = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "serve", "--config", str(config),
                           "--port", str(grpc_ports[0]), "--http-port", str(http_ports[0])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"the Data API port 127.0.0.1:{stack.data_api_port} is not available" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_port_in_use_is_one_line_from_the_parent(tmp_path: Path) -> None:
    import socket

    config = tmp_path / "agentgov.yaml"
    config.write_text(json.dumps({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False}}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "agentgov.cli.main", "serve", "--config", str(config),
                               "--port", str(port), "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"config error: worker 0's port 127.0.0.1:{port} is not available: Address already in use"


def test_a_short_or_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    from agentgov.engine.config import Config, ConfigError

    cfg = Config(base=tmp_path, data_api_token_file="t")
    with pytest.raises(ConfigError, match="No such file"):
        cfg.data_api_token()
    (tmp_path / "t").write_text("short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        cfg.data_api_token()


def test_a_port_with_connections_in_time_wait_is_free_for_serve(tmp_path: Path) -> None:
    """A server just stopped while Envoy was connected leaves its side of those connections in
    TIME_WAIT for a minute; the real listeners bind anyway (SO_REUSEADDR), so the pre-start check must
    too, instead of refusing to start with `Address already in use`."""
    import socket

    from agentgov.cli.serve import _check_free
    from agentgov.engine.config import Config

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its end (127.0.0.1:port) goes to TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))  # what the old check did: refused while TIME_WAIT lasts
    _check_free(Config(base=tmp_path, port=port, http_port=0))  # no error: serve may start
