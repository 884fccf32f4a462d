"""agentgov.yaml: one resolver (`resolve`: file, environment, flags → a frozen, validated `Config`),
its JSON Schema (`agentgov.schema.json`), and the builders that turn a `Config` into what runs."""

from agentgov.engine.config.build import build_backend, build_governor, build_hooks, load_policy_set
from agentgov.engine.config.resolve import check, default_config_path, environment, load_config, resolve, schema
from agentgov.engine.config.settings import (
    DEFAULT_CONFIG,
    LOG_LEVELS,
    Config,
    ConfigError,
    Problem,
    worker_http_socket,
    worker_socket,
)

__all__ = ["DEFAULT_CONFIG", "LOG_LEVELS", "Config", "ConfigError", "Problem", "build_backend", "build_governor",
           "build_hooks", "check", "default_config_path", "environment", "load_config", "load_policy_set", "resolve",
           "schema", "worker_http_socket", "worker_socket"]
