"""The resolved configuration: one frozen record, made by `resolve` from agentgov.yaml, the
environment and command-line flags, and read by every command."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgov.engine.backends.envoy_result import OPA_ENVOY_DEFAULT_RULE
from agentgov.engine.backends.rego import DEFAULT_RULE
from agentgov.engine.bundles.settings import BundleSettings
from agentgov.engine.protocols.mcp import DEFAULT_MAX_BATCH

if TYPE_CHECKING:  # an annotation only: importing the pipeline would load the whole decision path
    from agentgov.engine.pipeline.types import InputFormat

DEFAULT_CONFIG = "agentgov.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration: where (`FILE:LINE:COL`, an environment variable or a
    flag), the key path, and what."""

    where: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(ValueError):
    """Every problem found, one per line, each `FILE:LINE:COL: message` (or `AGENTGOV_X: …`, `--flag: …`)."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        self.problems: tuple[Problem, ...] = (Problem("", "", problems),) if isinstance(problems, str) \
            else tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


_KEY_PATH = re.compile(r"^`?([a-z_]+(?:\.[a-z_]+|\[\d+\])*)")


def leading_key(message: str) -> str:
    """`pii.min_confidence.x must be…` → `pii.min_confidence.x` (list indexes dropped for lookup)."""
    m = _KEY_PATH.match(message)
    return re.sub(r"\[\d+\]", "", m.group(1)) if m else ""


def worker_socket(directory: Path, index: int) -> str:
    """Where worker `index` listens with `server.socket_dir`; `envoy-config` must name the same file."""
    return str(directory / f"agentgov-{index}.sock")


def worker_http_socket(directory: Path, index: int) -> str:
    """Where worker `index` serves the HTTP ext_authz transport with `server.socket_dir`."""
    return str(directory / f"agentgov-http-{index}.sock")


@dataclass(frozen=True)
class Config:
    base: Path  # relative paths in the file are read from here (the file's folder)
    source: str = ""  # the file it came from ("" when none)
    engine: str = "rego"
    paths: tuple[str, ...] = ("policies",)
    rule: str = DEFAULT_RULE
    opa_url: str | None = None
    input_format: InputFormat = "agentgov"
    # `policy.bundle`: load (and keep reloading) the policies from a bundle source instead of `paths`;
    # `policy.shadow`: a candidate bundle evaluated beside the active policies, never enforced.
    bundle: BundleSettings | None = None
    shadow: BundleSettings | None = None
    identity: Mapping[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 9191
    # Envoy's HTTP ext_authz (the fast transport) on http_port + i; 0 turns it off (gRPC only).
    http_port: int = 9292
    max_request_bytes: int = 1024 * 1024  # the most of a body Envoy sends (envoy-config uses the same)
    workers: int = 1
    metrics_port: int | None = None
    data_api_port: int | None = None
    # OPA's Data API trusts the subject the caller states: loopback unless deliberately exposed, and
    # with a token file, `Authorization: Bearer <token>` required (OPA's --authentication=token).
    data_api_host: str = "127.0.0.1"
    data_api_token_file: str | None = None
    allow_truncated_body: bool = False
    mcp_paths: tuple[str, ...] = ()
    # Delegate every decision to this remote agentgov.v1.DecisionService (a gRPC target).
    decision_service: str | None = None
    decision_service_timeout_s: float = 0.4
    drain_s: float = 5.0
    drain_notice_s: float = 0.0
    # Every this many seconds a worker hands the heap it freed back to the OS (0: never; server/memory.py).
    memory_trim_s: float = 5.0
    # Workers listen on Unix sockets <socket_dir>/agentgov-<i>.sock instead of TCP ports.
    socket_dir: str | None = None
    # Server TLS (cert_file, key_file, client_ca_file for mTLS); with decision_service, the client's
    # (ca_file, and cert_file/key_file for mTLS).
    tls: Mapping[str, str] = field(default_factory=dict)
    # Envoy runs agentgov's ext_proc filter (envoy-config --ext-proc): request bodies can be redacted
    # and responses inspected. Without it a `redact` obligation is refused (redaction_unavailable).
    ext_proc: bool = False
    max_batch: int = DEFAULT_MAX_BATCH  # JSON-RPC messages per MCP request (each one is a decision)
    pii: Mapping[str, Any] = field(default_factory=dict)
    hooks: tuple[Any, ...] | None = None  # the `hooks:` list: order, third-party plugins and their options
    audit: Mapping[str, Any] = field(default_factory=dict)  # with `dir`, the audit hook is on
    budgets: Mapping[str, Any] | None = None  # with a `budgets:` section, the budget hook is on
    approvals: Mapping[str, Any] | None = None  # with an `approvals:` section, approvals are held and spent
    console: Mapping[str, Any] | None = None  # with a `console:` section, `serve` also runs the web console
    tracing: Mapping[str, Any] | None = None  # with a `tracing:` section, decisions are traced (OTLP)
    worker_index: int = 0  # which worker builds from this config (its audit chain is named after it)
    log_level: str = "info"
    # Serve the active bundle to OPA agents over OPA's bundle service API, on the Data API port.
    serve_bundles: bool = False
    # Where each key was set (`key.path` → `FILE:LINE:COL`, `AGENTGOV_X` or `--flag`), so a problem
    # found only when the configuration is built still names its place.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def problem(self, message: str, key: str = "") -> ConfigError:
        """A ConfigError located at `key` (default: the key path the message starts with)."""
        key = key or leading_key(message)
        where = ""
        parts = key.split(".") if key else []
        for depth in range(len(parts), 0, -1):
            where = self.origins.get(".".join(parts[:depth]), "")
            if where:
                break
        return ConfigError([Problem(where or self.source, key, message)])

    def socket_path(self, index: int) -> str | None:
        return worker_socket(self.base / self.socket_dir, index) if self.socket_dir else None

    def http_socket_path(self, index: int) -> str | None:
        return worker_http_socket(self.base / self.socket_dir, index) if self.socket_dir and self.http_port else None

    def data_api_token(self) -> str | None:
        if not self.data_api_token_file:
            return None
        try:
            token = (self.base / self.data_api_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"server.data_api_token_file: {self.data_api_token_file}: {exc.strerror}") from None
        if len(token) < 16:
            raise ConfigError("server.data_api_token_file: the token must be at least 16 characters")
        return token

    def default_rule(self) -> str:
        return OPA_ENVOY_DEFAULT_RULE if self.input_format == "opa-envoy" else DEFAULT_RULE

    def read_tls(self, key: str) -> bytes | None:
        path = self.tls.get(key)
        if not path:
            return None
        try:
            return (self.base / path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"server.tls.{key}: {path}: {exc.strerror}") from None
