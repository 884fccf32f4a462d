"""agentgov.yaml: load, validate (unknown keys are errors, with the file), and assemble a Governor."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from agentgov.engine.backends.base import DecisionBackend, ResultReader, decision_from_document
from agentgov.engine.backends.envoy_result import OPA_ENVOY_DEFAULT_RULE, decision_from_envoy_result
from agentgov.engine.backends.opa_remote import RemoteOpaBackend
from agentgov.engine.backends.rego import DEFAULT_RULE
from agentgov.engine.bundles.bundle import build_bundle
from agentgov.engine.bundles.reloader import BundleReloader
from agentgov.engine.bundles.settings import BundleConfigError, BundleSettings, bundle_settings
from agentgov.engine.bundles.sources import source_for
from agentgov.engine.governor import INPUT_FORMATS, Governor, GovernorOptions, InputFormat
from agentgov.engine.hooks.api_keys import DEFAULT_API_KEY_HEADER, api_keys_from_config
from agentgov.engine.hooks.audit.chain import AuditError
from agentgov.engine.hooks.audit.hook import AuditConfigError, AuditHook
from agentgov.engine.hooks.audit.hook import settings_from_config as audit_settings
from agentgov.engine.hooks.base import Hook
from agentgov.engine.hooks.budget.hook import BudgetHook, open_store
from agentgov.engine.hooks.budget.limits import BudgetConfigError, tenant_caps_from_data
from agentgov.engine.hooks.budget.limits import settings_from_config as budget_settings
from agentgov.engine.hooks.identity import IdentityVerifier, issuers_from_config
from agentgov.engine.hooks.pii.hook import PiiConfigError, PiiHook, settings_from_config
from agentgov.engine.hooks.registry import HookLoadError, HookSlot, assemble
from agentgov.engine.hooks.tool_filter import ToolListHook
from agentgov.engine.keys import unknown_keys
from agentgov.engine.policy.policy_set import NO_POLICIES, PolicySet, UnavailableBackend, policy_set_builder
from agentgov.engine.policy.problems import PolicyLoadError, yaml_problem
from agentgov.engine.policy.sources import discover
from agentgov.engine.protocols.mcp import DEFAULT_MAX_BATCH

_TOP = {"policy", "identity", "server", "pii", "hooks", "audit", "budgets"}
_POLICY = {"engine", "paths", "rule", "opa_url", "input_format", "bundle", "shadow"}
_IDENTITY = {"issuers", "api_keys", "api_key_header", "leeway_s", "required"}
_SERVER = {"host", "port", "workers", "metrics_port", "data_api_port", "allow_truncated_body", "mcp_paths",
           "decision_service", "decision_service_timeout_s", "tls", "drain_s", "drain_notice_s",
           "socket_dir", "ext_proc", "max_batch", "data_api_host", "data_api_token_file", "log_level",
           "serve_bundles", "http_port", "max_request_bytes"}
_TLS = {"cert_file", "key_file", "client_ca_file", "ca_file"}
_SERVER_TYPES: dict[str, Any] = {
    "host": str, "port": int, "workers": int, "metrics_port": int, "data_api_port": int,
    "allow_truncated_body": bool, "decision_service": str, "decision_service_timeout_s": (int, float),
    "drain_s": (int, float), "drain_notice_s": (int, float), "socket_dir": str, "ext_proc": bool,
    "max_batch": int, "data_api_host": str, "data_api_token_file": str, "log_level": str, "serve_bundles": bool,
    "http_port": int, "max_request_bytes": int,
}
_TYPE_NAMES: dict[Any, str] = {str: "a string", int: "an integer", bool: "true or false", (int, float): "a number"}


def worker_socket(directory: Path, index: int) -> str:
    """Where worker `index` listens with `server.socket_dir`; `envoy-config` must name the same file."""
    return str(directory / f"agentgov-{index}.sock")


def worker_http_socket(directory: Path, index: int) -> str:
    """Where worker `index` serves the HTTP ext_authz transport with `server.socket_dir`."""
    return str(directory / f"agentgov-http-{index}.sock")


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    base: Path
    engine: str = "rego"
    paths: list[str] = field(default_factory=lambda: ["policies"])
    rule: str = DEFAULT_RULE
    opa_url: str | None = None
    input_format: InputFormat = "agentgov"
    # `policy.bundle`: load (and keep reloading) the policies from a bundle source instead of `paths`;
    # `policy.shadow`: a candidate bundle evaluated beside the active policies, never enforced.
    bundle: BundleSettings | None = None
    shadow: BundleSettings | None = None
    identity: dict[str, Any] = field(default_factory=dict)
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
    mcp_paths: list[str] = field(default_factory=list)
    # Delegate every decision to this remote agentgov.v1.DecisionService (a gRPC target).
    decision_service: str | None = None
    decision_service_timeout_s: float = 0.4
    drain_s: float = 5.0
    drain_notice_s: float = 0.0
    # Workers listen on Unix sockets <socket_dir>/agentgov-<i>.sock instead of TCP ports.
    socket_dir: str | None = None
    # Server TLS (cert_file, key_file, client_ca_file for mTLS); with decision_service, the client's
    # (ca_file, and cert_file/key_file for mTLS).
    tls: dict[str, str] = field(default_factory=dict)
    # Envoy runs agentgov's ext_proc filter (envoy-config --ext-proc): request bodies can be redacted
    # and responses inspected. Without it a `redact` obligation is refused (redaction_unavailable).
    ext_proc: bool = False
    max_batch: int = DEFAULT_MAX_BATCH  # JSON-RPC messages per MCP request (each one is a decision)
    pii: dict[str, Any] = field(default_factory=lambda: {})
    hooks: list[Any] | None = None  # the `hooks:` list: order, third-party plugins and their options
    audit: dict[str, Any] = field(default_factory=lambda: {})  # with `dir`, the audit hook is on
    budgets: dict[str, Any] | None = None  # with a `budgets:` section, the budget hook is on
    worker_index: int = 0  # which worker builds from this config (its audit chain is named after it)
    log_level: str = "info"
    # Serve the active bundle to OPA agents over OPA's bundle service API, on the Data API port.
    serve_bundles: bool = False
    explicit: set[str] = field(default_factory=set)  # policy keys the file set (so flags know what to derive)

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


DEFAULT_CONFIG = "agentgov.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")


def default_config_path() -> Path | None:
    """`./agentgov.yaml` when there is one: `serve` and `envoy-config` read the same file by default,
    so the Envoy bootstrap lists exactly the workers `serve` starts."""
    local = Path(DEFAULT_CONFIG)
    return local if local.is_file() else None


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config(base=Path.cwd())
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(yaml_problem(str(path), exc))) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    _keys(path, "", doc, _TOP)
    cfg = Config(base=path.parent)
    policy = _section(path, doc, "policy", _POLICY)
    cfg.engine = str(policy.get("engine", cfg.engine))
    cfg.paths = [str(p) for p in policy.get("paths", cfg.paths)]
    cfg.input_format = policy.get("input_format", cfg.input_format)
    if cfg.input_format not in INPUT_FORMATS:
        raise ConfigError(f"{path}: policy.input_format must be one of {', '.join(INPUT_FORMATS)}")
    cfg.rule = str(policy.get("rule", cfg.default_rule()))
    cfg.explicit = set(policy)
    cfg.opa_url = policy.get("opa_url")
    try:
        for name in ("bundle", "shadow"):
            if policy.get(name) is not None:
                setattr(cfg, name, bundle_settings(policy[name], cfg.base, name))
    except BundleConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if cfg.bundle is not None and "paths" in policy:
        raise ConfigError(f"{path}: policy.bundle and policy.paths both say where the policies are: set one")
    cfg.identity = _section(path, doc, "identity", _IDENTITY)
    server = _section(path, doc, "server", _SERVER)
    for key, kind in _SERVER_TYPES.items():
        if key in server:
            value = server[key]
            if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
                raise ConfigError(f"{path}: server.{key} must be {_TYPE_NAMES[kind]}, got {value!r}")
            setattr(cfg, key, value)
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"{path}: server.log_level must be one of {', '.join(LOG_LEVELS)}")
    if cfg.max_batch < 1:
        raise ConfigError(f"{path}: server.max_batch must be at least 1")
    if not 0 <= cfg.http_port <= 65535:
        raise ConfigError(f"{path}: server.http_port must be a port number, or 0 (no HTTP ext_authz)")
    if cfg.max_request_bytes < 1:
        raise ConfigError(f"{path}: server.max_request_bytes must be a positive number of bytes")
    cfg.mcp_paths = [str(p) for p in server.get("mcp_paths", [])]
    tls = server.get("tls") or {}
    if not isinstance(tls, dict):
        raise ConfigError(f"{path}: `server.tls` must be a mapping")
    _keys(path, "server.tls.", tls, _TLS)
    cfg.tls = {k: str(v) for k, v in tls.items()}
    # Hook sections: each hook checks its own keys when it is built (build_hooks).
    cfg.pii = _optional(path, doc, "pii", dict, "a mapping") or {}
    cfg.hooks = _optional(path, doc, "hooks", list, "a list of {name, failure_mode?, timeout_s?, options?}")
    cfg.audit = _optional(path, doc, "audit", dict, "a mapping") or {}
    cfg.budgets = _optional(path, doc, "budgets", dict, "a mapping")
    if cfg.engine not in ("rego", "cedar", "opa"):
        raise ConfigError(f"{path}: policy.engine must be rego, cedar or opa")
    return cfg


def _optional(path: Path, doc: dict[str, Any], name: str, kind: type, what: str) -> Any:
    """A top-level section that may be absent (None), else must be of `kind`."""
    value = doc.get(name)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{path}: `{name}` must be {what}")
    return value


def _section(path: Path, doc: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: `{name}` must be a mapping")
    _keys(path, f"{name}.", section, allowed)
    return section


def _keys(path: Path, prefix: str, doc: dict[str, Any], allowed: set[str]) -> None:
    problem = unknown_keys(doc, allowed, prefix)
    if problem:
        raise ConfigError(f"{path}: {problem}")


def build_backend(cfg: Config) -> DecisionBackend:
    return load_policy_set(cfg).backend


def _reader(cfg: Config) -> ResultReader:
    return decision_from_envoy_result if cfg.input_format == "opa-envoy" else decision_from_document


def load_policy_set(cfg: Config) -> PolicySet:
    """The configured policies from `paths` (or a remote OPA), read once. A `policy.bundle` source
    is loaded by the Governor's reloader when it starts (`build_governor`), not here."""
    if cfg.input_format == "opa-envoy" and cfg.engine == "cedar":
        raise ConfigError("policy.input_format opa-envoy needs Rego (engine rego or opa): "
                          "OPA-Envoy policies are Rego")
    if cfg.engine == "opa":
        if not cfg.opa_url:
            raise ConfigError("policy.engine opa needs policy.opa_url")
        return PolicySet(RemoteOpaBackend(cfg.opa_url, cfg.rule, reader=_reader(cfg)), source=cfg.opa_url)
    roots = [cfg.base / p for p in cfg.paths]
    sources = discover(roots)
    build = policy_set_builder(cfg.engine, rule=cfg.rule, reader=_reader(cfg))
    # One bundle file: its manifest revision and archive digest, as if a bundle source had loaded it.
    revision, digest = sources.bundles[0] if len(roots) == 1 and len(sources.bundles) == 1 else (sources.revision, "")
    try:
        policy = build(sources, revision, digest, None, ", ".join(cfg.paths))
    except PolicyLoadError as exc:
        if any(p.code == NO_POLICIES for p in exc.problems):
            raise ConfigError(f"no {cfg.engine} policies under {', '.join(cfg.paths)}") from None
        raise
    if cfg.serve_bundles:
        policy = replace(policy, blob=_bundle_of(roots))
    return policy


def _bundle_of(roots: list[Path]) -> bytes:
    """What `serve_bundles` hands OPA agents when the policies come from folders: the bundle
    `agentgov build` would make of them (a single bundle file is served as it is)."""
    if len(roots) == 1 and roots[0].is_file():
        return roots[0].read_bytes()
    return build_bundle(roots)


def build_governor(cfg: Config) -> Governor:
    """The Governor for this config. With `policy.bundle`, it starts with no policy (every check
    refused with 503 policy_unavailable) and its reloader loads the bundle when the Governor starts,
    from the source or else the persisted last good copy; likewise `policy.shadow`'s candidate."""
    identity = None
    if cfg.identity.get("issuers") or cfg.identity.get("api_keys"):
        try:
            issuers = issuers_from_config(cfg.identity["issuers"], cfg.base) if cfg.identity.get("issuers") else []
            api_keys = api_keys_from_config(cfg.identity["api_keys"]) if cfg.identity.get("api_keys") else []
            identity = IdentityVerifier(issuers, api_keys=api_keys, leeway_s=float(cfg.identity.get("leeway_s", 30)),
                                        api_key_header=str(cfg.identity.get("api_key_header", DEFAULT_API_KEY_HEADER)))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ConfigError(f"identity: {exc}") from None
    elif cfg.identity.get("required", True):
        raise ConfigError("identity has no issuers and no api_keys: every request would be anonymous "
                          "(set identity.required: false to accept that)")
    if (cfg.bundle or cfg.shadow) and cfg.engine == "opa":
        raise ConfigError("policy.bundle and policy.shadow load bundles into agentgov's engines (rego or "
                          "cedar); a remote OPA loads its own bundles")
    if cfg.bundle is not None:
        policy = PolicySet(UnavailableBackend(f"no bundle loaded yet from {cfg.bundle.source}"),
                           source=cfg.bundle.source)
    else:
        policy = load_policy_set(cfg)
    governor = Governor(policy, identity, GovernorOptions(
        allow_truncated_body=bool(cfg.allow_truncated_body), mcp_paths=tuple(cfg.mcp_paths),
        input_format=cfg.input_format, can_redact=bool(cfg.ext_proc), max_batch=cfg.max_batch),
        hooks=build_hooks(cfg))
    build = policy_set_builder(cfg.engine, rule=cfg.rule, reader=_reader(cfg))
    for name, settings, activate in (("active", cfg.bundle, governor.swap), ("shadow", cfg.shadow, governor.set_shadow)):
        if settings is None:
            continue
        try:
            source = source_for(settings.source, cfg.base, token=settings.token, insecure=settings.insecure)
        except PolicyLoadError as exc:
            raise ConfigError(f"policy.{'bundle' if name == 'active' else name}.source: "
                              f"{exc.problems[0].message}") from None
        governor.attach(BundleReloader(name, source, build, activate, settings.reload))
    return governor


def build_hooks(cfg: Config) -> list[HookSlot]:
    """The configured hooks after identity, in order. Built-ins: `pii` (unless `pii.enabled: false`)
    and `tools_list`; third-party hooks from the entry-point group `agentgov.hooks`."""
    builtins: dict[str, Hook] = {}
    pii = dict(cfg.pii)
    enabled = pii.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("pii.enabled must be true or false")
    if enabled:
        try:
            builtins["pii"] = PiiHook(settings_from_config(pii))
        except PiiConfigError as exc:
            raise ConfigError(str(exc)) from None
    builtins["tools_list"] = ToolListHook()
    if cfg.budgets is not None:
        try:
            budget = budget_settings(cfg.budgets)
            if cfg.engine != "opa" and cfg.bundle is None:
                # A remote OPA's data is not here: its tenants get the configured caps. A bundle's
                # caps are read when it is activated (BudgetHook.check_policy_data).
                data = discover([cfg.base / p for p in cfg.paths]).data
                budget = replace(budget, tenant_caps=tenant_caps_from_data(data, budget.limits))
        except BudgetConfigError as exc:
            raise ConfigError(str(exc)) from None
        builtins["budget"] = BudgetHook(budget, open_store(budget, cfg.base), settled_by_responses=bool(cfg.ext_proc))
    try:
        audit = audit_settings(cfg.audit, cfg.base)
    except (AuditConfigError, AuditError) as exc:
        raise ConfigError(str(exc)) from None
    if audit is not None:
        builtins["audit"] = AuditHook(audit, cfg.worker_index)
    try:
        return assemble(cfg.hooks, builtins)
    except HookLoadError as exc:
        raise ConfigError(str(exc)) from None
