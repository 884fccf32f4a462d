"""agentgov.yaml: one resolver (`resolve`: file, environment, flags → a frozen, validated `Config`),
its JSON Schema (`agentgov.schema.json`), and the builders that turn a `Config` into what runs.

The names are loaded when first used: a command that only resolves a configuration (`check
--config`, `budget show`) does not import the servers' and stores' libraries the builders need."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgov.engine.config.build import build_backend, build_governor, build_hooks, load_policy_set
    from agentgov.engine.config.resolver import check, default_config_path, environment, load_config, resolve, schema
    from agentgov.engine.config.settings import (
        DEFAULT_CONFIG,
        LOG_LEVELS,
        Config,
        ConfigError,
        Problem,
        worker_http_socket,
        worker_socket,
    )

_WHERE = {
    **dict.fromkeys(("build_backend", "build_governor", "build_hooks", "load_policy_set"), "build"),
    **dict.fromkeys(("check", "default_config_path", "environment", "load_config", "resolve", "schema"), "resolver"),
    **dict.fromkeys(("DEFAULT_CONFIG", "LOG_LEVELS", "Config", "ConfigError", "Problem", "worker_http_socket",
                     "worker_socket"), "settings"),
}
__all__ = ["DEFAULT_CONFIG", "LOG_LEVELS", "Config", "ConfigError", "Problem", "build_backend", "build_governor",
           "build_hooks", "check", "default_config_path", "environment", "load_config", "load_policy_set", "resolve",
           "schema", "worker_http_socket", "worker_socket"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
