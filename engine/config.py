"""agentgov.yaml: load, validate (unknown keys are errors, with the file), and assemble a Governor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentgov.engine.backends.base import DecisionBackend
from agentgov.engine.backends.opa_remote import RemoteOpaBackend
from agentgov.engine.backends.rego import DEFAULT_RULE
from agentgov.engine.governor import Governor, GovernorOptions
from agentgov.engine.hooks.identity import IdentityVerifier, issuers_from_config
from agentgov.engine.policy.library import build_backends
from agentgov.engine.policy.problems import yaml_problem
from agentgov.engine.policy.sources import discover

_TOP = {"policy", "identity", "server"}
_POLICY = {"engine", "paths", "rule", "opa_url"}
_IDENTITY = {"issuers", "leeway_s", "required"}
_SERVER = {"host", "port", "workers", "metrics_port", "allow_truncated_body", "mcp_paths"}


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    base: Path
    engine: str = "rego"
    paths: list[str] = field(default_factory=lambda: ["policies"])
    rule: str = DEFAULT_RULE
    opa_url: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 9191
    workers: int = 1
    metrics_port: int | None = None
    allow_truncated_body: bool = False
    mcp_paths: list[str] = field(default_factory=list)


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
    cfg.rule = str(policy.get("rule", cfg.rule))
    cfg.opa_url = policy.get("opa_url")
    cfg.identity = _section(path, doc, "identity", _IDENTITY)
    server = _section(path, doc, "server", _SERVER)
    for key in ("host", "port", "workers", "metrics_port", "allow_truncated_body"):
        if key in server:
            setattr(cfg, key, server[key])
    cfg.mcp_paths = [str(p) for p in server.get("mcp_paths", [])]
    if cfg.engine not in ("rego", "cedar", "opa"):
        raise ConfigError(f"{path}: policy.engine must be rego, cedar or opa")
    return cfg


def _section(path: Path, doc: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: `{name}` must be a mapping")
    _keys(path, f"{name}.", section, allowed)
    return section


def _keys(path: Path, prefix: str, doc: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(prefix + k for k in unknown)}")


def build_backend(cfg: Config) -> DecisionBackend:
    if cfg.engine == "opa":
        if not cfg.opa_url:
            raise ConfigError("policy.engine opa needs policy.opa_url")
        return RemoteOpaBackend(cfg.opa_url, cfg.rule)
    backends = build_backends(discover([cfg.base / p for p in cfg.paths]), rule=cfg.rule)
    if cfg.engine not in backends:
        raise ConfigError(f"no {cfg.engine} policies under {', '.join(cfg.paths)}")
    return backends[cfg.engine]


def build_governor(cfg: Config) -> Governor:
    identity = None
    if cfg.identity.get("issuers"):
        try:
            issuers = issuers_from_config(cfg.identity["issuers"], cfg.base)
            identity = IdentityVerifier(issuers, leeway_s=float(cfg.identity.get("leeway_s", 30)))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ConfigError(f"identity: {exc}") from None
    elif cfg.identity.get("required", True):
        raise ConfigError("identity.issuers is empty: every request would be anonymous "
                          "(set identity.required: false to accept that)")
    return Governor(build_backend(cfg), identity, GovernorOptions(
        allow_truncated_body=bool(cfg.allow_truncated_body), mcp_paths=tuple(cfg.mcp_paths)))
