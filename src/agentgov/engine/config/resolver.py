"""`resolve(file, environment, flags)` → one frozen, validated `Config`, for every command.

Three layers, later ones winning: agentgov.yaml, `AGENTGOV_*` environment variables, flags. All
three are merged into one document first and then validated together against the published JSON
Schema (`agentgov.schema.json`, `agentgov config schema`), so a flag or a variable is checked
exactly like the file, and every problem is reported at once with where it came from:
`agentgov.yaml:3:9: server.port must be an integer`, `AGENTGOV_WORKERS: …`, `--port: …`.

Environment variables: `AGENTGOV_<SECTION>__<KEY>` (double underscore between levels, e.g.
`AGENTGOV_SERVER__HTTP_PORT`) for any key, plus the short names below for the common ones. Values
are read as YAML scalars (`9191` is a number, `true` a boolean); a list key takes
whitespace-separated words, or a YAML flow list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from agentgov.engine.bundles.settings import BundleConfigError, bundle_settings
from agentgov.engine.config.settings import DEFAULT_CONFIG, Config, ConfigError, Problem

Path_ = tuple[str | int, ...]
SCHEMA_FILE = "agentgov.schema.json"
# The short environment variables (each also reachable as AGENTGOV_<SECTION>__<KEY>).
ENV_ALIASES: dict[str, str] = {
    "AGENTGOV_HOST": "server.host", "AGENTGOV_PORT": "server.port", "AGENTGOV_HTTP_PORT": "server.http_port",
    "AGENTGOV_WORKERS": "server.workers", "AGENTGOV_SOCKET_DIR": "server.socket_dir",
    "AGENTGOV_METRICS_PORT": "server.metrics_port", "AGENTGOV_DATA_API_PORT": "server.data_api_port",
    "AGENTGOV_LOG_LEVEL": "server.log_level", "AGENTGOV_DECISION_SERVICE": "server.decision_service",
    "AGENTGOV_ENGINE": "policy.engine", "AGENTGOV_INPUT_FORMAT": "policy.input_format", "AGENTGOV_RULE": "policy.rule",
    "AGENTGOV_POLICIES": "policy.paths", "AGENTGOV_BUNDLE": "policy.bundle.source",
    "AGENTGOV_SHADOW": "policy.shadow.source",
    "AGENTGOV_OPA_URL": "policy.opa_url",
}
# Keys naming files or folders: from the file they are relative to its folder; from a flag or the
# environment, to the current folder (made absolute when they are read).
PATH_KEYS = {"policy.paths", "server.socket_dir"}
SOURCE_KEYS = {"policy.bundle", "policy.shadow", "policy.bundle.source", "policy.shadow.source"}  # a path or a URL
_URL_PREFIXES = ("oci://", "http://", "https://")
# Where the policies come from: a layer that names one of these replaces what lower layers said of the other.
_POLICY_ORIGINS = ("policy.paths", "policy.bundle")


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of agentgov.yaml, as shipped in the package."""
    text = resources.files("agentgov.engine.config").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def default_config_path() -> Path | None:
    """`./agentgov.yaml` when there is one: every command reads the same file by default, so the
    Envoy bootstrap lists exactly the workers `serve` starts."""
    local = Path(DEFAULT_CONFIG)
    return local if local.is_file() else None


def load_config(path: Path | None) -> Config:
    """The file alone (no environment, no flags): what tests and library callers want."""
    return resolve(path)


def resolve(file: Path | None = None, environ: Mapping[str, str] | None = None,
            flags: Mapping[str, tuple[str, Any]] | None = None) -> Config:
    """The configuration from `file` (None: defaults), then `environ` (the `AGENTGOV_*` variables;
    None: none), then `flags` (key path → (flag name, value); a None value is not given).
    Raises ConfigError listing every problem."""
    doc, origins = _layers(file, environ or {}, flags or {})
    problems = validate(doc, origins, file)
    if problems:
        raise ConfigError(problems)
    return _build(doc, origins, file)


def check(file: Path | None, environ: Mapping[str, str] | None = None,
          flags: Mapping[str, tuple[str, Any]] | None = None) -> list[Problem]:
    """Every problem in the configuration, without stopping at the first (`agentgov config check`)."""
    try:
        doc, origins = _layers(file, environ or {}, flags or {})
    except ConfigError as exc:
        return list(exc.problems)
    problems = validate(doc, origins, file)
    if problems:
        return problems
    try:
        _build(doc, origins, file)
    except ConfigError as exc:
        return list(exc.problems)
    return []


# --- layers ------------------------------------------------------------------------------------

Origins = dict[Path_, str]  # key path → where it was set: "FILE:LINE:COL", "AGENTGOV_X" or "--flag"


def _layers(file: Path | None, environ: Mapping[str, str],
            flags: Mapping[str, tuple[str, Any]]) -> tuple[dict[str, Any], Origins]:
    origins: Origins = {}
    doc: dict[str, Any] = {}
    if file is not None:
        doc = _read_file(file, origins)
    for name in sorted(environ):
        key = _env_key(name)
        if key is not None:
            _overlay(doc, origins, key, _env_value(key, environ[name], name), name)
    for key, (flag, value) in flags.items():
        if value is not None:
            _overlay(doc, origins, key, _absolute(key, value), flag)
    return doc, origins


def _read_file(file: Path, origins: Origins) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(file), "", exc.strerror or str(exc))]) from None
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's C loader when present
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _positions(node, (), str(file), origins)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(file)
        raise ConfigError([Problem(where, "", f"invalid YAML: {getattr(exc, 'problem', None) or exc}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([Problem(f"{file}:1:1", "", "top level must be a mapping")])
    return data


def _positions(node: yaml.Node, path: Path_, file: str, origins: Origins) -> None:
    """Where each key is written in the file (a list item: where it starts); a key written twice in
    one mapping is refused (YAML would keep the last one silently: two readings)."""
    if not path:
        origins[path] = _mark(file, node)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            where = _mark(file, key_node)
            if key in seen:
                raise ConfigError([Problem(where, _dotted((*path, key)),
                                           f"{_dotted((*path, key))} is set twice in this mapping")])
            seen.add(key)
            origins[(*path, key)] = where
            _positions(value_node, (*path, key), file, origins)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            origins[(*path, index)] = _mark(file, item)
            _positions(item, (*path, index), file, origins)


def _mark(file: str, node: yaml.Node) -> str:
    return f"{file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _env_key(name: str) -> str | None:
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    if name.startswith("AGENTGOV_") and "__" in name:
        return ".".join(part.lower() for part in name.removeprefix("AGENTGOV_").split("__"))
    return None  # AGENTGOV_CONFIG and other variables that are not configuration keys


def _env_value(key: str, raw: str, name: str) -> Any:
    if key in SOURCE_KEYS:
        value: Any = raw  # a source is a string, whatever it looks like
    elif _is_list(key) and not raw.lstrip().startswith("["):
        value = raw.split()
    else:
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML: the string itself, which the schema then judges
    return _absolute(key, value)


def _is_list(key: str) -> bool:
    node: Any = schema()
    for part in key.split("."):
        node = node.get("properties", {}).get(part, {})
    return bool(node.get("type") == "array")


def _absolute(key: str, value: Any) -> Any:
    """A path given by a flag or variable is relative to the current folder, not to the file's."""
    if key in PATH_KEYS:
        if isinstance(value, list | tuple):
            return [str(Path(v).resolve()) if isinstance(v, str) else v for v in value]
        return str(Path(value).resolve()) if isinstance(value, str) else value
    if key in SOURCE_KEYS and isinstance(value, str) and not value.startswith(_URL_PREFIXES):
        return str(Path(value).resolve())
    return value


def _overlay(doc: dict[str, Any], origins: Origins, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    for index, origin in enumerate(_POLICY_ORIGINS):
        if key == origin or key.startswith(origin + "."):
            # Naming where the policies are replaces what a lower layer said with the other key.
            policy = doc.get("policy")
            if isinstance(policy, dict):
                policy.pop(_POLICY_ORIGINS[1 - index].split(".")[1], None)
    node = doc
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
            origins[tuple(parts[:depth + 1])] = where
        node = child
    node[parts[-1]] = value
    path: Path_ = tuple(parts)
    for known in [p for p in origins if p[:len(path)] == path]:
        del origins[known]
    origins[path] = where


# --- validation ----------------------------------------------------------------------------------

def validate(doc: Mapping[str, Any], origins: Origins, file: Path | None) -> list[Problem]:
    """Schema problems, then the problems only a section's own reader can see (bundle sources)."""
    problems = sorted((problem for error in _validator().iter_errors(doc) for problem in _problems(error, origins, file)),
                      key=_reading_order)
    policy = doc.get("policy")
    if not problems and isinstance(policy, dict):
        if "bundle" in policy and "paths" in policy:
            problems.append(Problem(_where(origins, ("policy", "bundle"), file), "policy.bundle",
                                    "policy.bundle and policy.paths both say where the policies are: set one"))
        for name in ("bundle", "shadow"):
            if policy.get(name) is not None:
                try:
                    bundle_settings(policy[name], _base(file), name)
                except BundleConfigError as exc:
                    problems.append(Problem(_where(origins, ("policy", name), file), f"policy.{name}", str(exc)))
    return problems


def _reading_order(problem: Problem) -> tuple[int, int, int, str]:
    """The file's problems top to bottom, then the variables', then the flags'."""
    where = problem.where
    if where.startswith("AGENTGOV_"):
        return (1, 0, 0, where)
    if where.startswith("--"):
        return (2, 0, 0, where)
    parts = where.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return (0, int(parts[1]), int(parts[2]), problem.key)
    return (0, 0, 0, problem.key)


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "object": "a mapping", "array": "a list"}


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "object": dict, "array": list, "boolean": bool,
                                                   "integer": int, "number": (int, float)}


def _problems(error: ValidationError, origins: Origins, file: Path | None) -> list[Problem]:
    """A schema error in agentgov's words. For a choice of shapes (`oneOf`), the errors of the shape
    the value has (a mapping's unknown key, not "matches no shape")."""
    choices: Any = error.validator_value
    if error.validator == "oneOf" and error.context:
        for index, branch in enumerate(choices):
            kind = _JSON_TYPES.get(str(branch.get("type")))
            if kind is not None and isinstance(error.instance, kind):
                inner = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] == index]
                if inner:
                    return [p for e in inner for p in _problems(e, origins, file)]
    return [_problem(error, origins, file)]


def _problem(error: ValidationError, origins: Origins, file: Path | None) -> Problem:
    path = tuple(error.absolute_path)
    key = _dotted(path)
    where = _where(origins, path, file)
    sub: Any = error.schema if isinstance(error.schema, dict) else {}  # jsonschema types these loosely
    value: Any = error.validator_value
    instance: Any = error.instance
    custom = sub.get("x-message")
    named = f"`{key}`" if key else "top level"
    if error.validator == "additionalProperties":
        extra = sorted(k for k in instance if k not in sub.get("properties", {}))
        where = _where(origins, (*path, extra[0]), file) if extra else where
        if path and isinstance(path[-1], int):  # an item of a list: `hooks[0]: unknown key(s) colour`
            return Problem(where, key, f"{key}: unknown key(s) {', '.join(extra)}")
        prefix = f"{key}." if key else ""
        return Problem(where, key, f"unknown key(s) {', '.join(prefix + k for k in extra)}")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return Problem(where, key, f"{key + '.' if key else ''}{missing} is required")
    if custom:
        return Problem(where, key, f"{key} {custom}" if not custom[0].isupper() else custom)
    if error.validator == "type":
        kind = value if isinstance(value, str) else value[0]
        words = _TYPE_WORDS.get(kind, kind)
        subject = named if kind in ("object", "array") else key or "top level"
        return Problem(where, key, f"{subject} must be {words}, got {_shown(error.instance)}")
    if error.validator == "enum":
        return Problem(where, key, f"{key} must be one of {', '.join(map(str, value))}, "
                                   f"got {_shown(error.instance)}")
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return Problem(where, key, f"{key} must be {_range(sub)}, got {_shown(error.instance)}")
    if error.validator == "oneOf":
        return Problem(where, key, f"{named} must be a source string or a mapping with a `source`")
    if error.validator == "pattern":
        return Problem(where, key, f"{key} must match {value}, got {_shown(error.instance)}")
    if error.validator in ("minItems", "minLength"):
        return Problem(where, key, f"{named} must not be empty")
    return Problem(where, key, f"{key}: {error.message}")


def _range(sub: Mapping[str, Any]) -> str:
    kind = "an integer" if sub.get("type") == "integer" else "a number"
    if sub.get("exclusiveMinimum") == 0:
        return "a positive number"
    low, high = sub.get("minimum"), sub.get("maximum")
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} of at least {low}"
    return f"{kind} of at most {high}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _where(origins: Origins, path: Path_, file: Path | None) -> str:
    for depth in range(len(path), -1, -1):
        if path[:depth] in origins:
            return origins[path[:depth]]
    return str(file) if file is not None else ""


def _base(file: Path | None) -> Path:
    return file.parent if file is not None else Path.cwd()


# --- the record ----------------------------------------------------------------------------------

_SERVER_FIELDS = ("host", "port", "workers", "metrics_port", "data_api_port", "allow_truncated_body",
                  "decision_service", "decision_service_timeout_s", "drain_s", "drain_notice_s", "socket_dir",
                  "ext_proc", "max_batch", "data_api_host", "data_api_token_file", "log_level", "serve_bundles",
                  "http_port", "max_request_bytes", "memory_trim_s")


def _build(doc: Mapping[str, Any], origins: Origins, file: Path | None) -> Config:
    base = _base(file)
    policy = dict(doc.get("policy") or {})
    server = dict(doc.get("server") or {})
    located = {".".join(str(p) for p in path if not isinstance(p, int)): where
               for path, where in sorted(origins.items(), key=lambda item: -len(item[0]))}
    cfg = Config(base=base, source=str(file) if file is not None else "", origins=located)
    changes: dict[str, Any] = {k: server[k] for k in _SERVER_FIELDS if k in server}
    for name in ("decision_service_timeout_s", "drain_s", "drain_notice_s", "memory_trim_s"):
        if name in changes:
            changes[name] = float(changes[name])
    changes["mcp_paths"] = tuple(str(p) for p in server.get("mcp_paths", ()))
    changes["tls"] = {k: str(v) for k, v in (server.get("tls") or {}).items()}
    changes["engine"] = str(policy.get("engine", cfg.engine))
    changes["paths"] = tuple(str(p) for p in policy.get("paths", cfg.paths))
    changes["input_format"] = policy.get("input_format", cfg.input_format)
    changes["opa_url"] = policy.get("opa_url")
    changes["identity"] = dict(doc.get("identity") or {})
    changes["pii"] = dict(doc.get("pii") or {})
    hooks = doc.get("hooks")
    changes["hooks"] = tuple(hooks) if hooks is not None else None
    changes["audit"] = dict(doc.get("audit") or {})
    changes["budgets"] = dict(doc["budgets"] or {}) if "budgets" in doc else None
    changes["approvals"] = dict(doc["approvals"] or {}) if "approvals" in doc else None
    changes["console"] = dict(doc["console"] or {}) if "console" in doc else None
    changes["tracing"] = dict(doc["tracing"]) if doc.get("tracing") is not None else None
    cfg = replace(cfg, **changes)
    cfg = replace(cfg, rule=str(policy.get("rule", cfg.default_rule())))
    try:
        bundle, shadow = (bundle_settings(policy[name], base, name) if policy.get(name) is not None else None
                          for name in ("bundle", "shadow"))
        cfg = replace(cfg, bundle=bundle, shadow=shadow)
    except BundleConfigError as exc:  # validate() saw these already; kept for callers of _build alone
        raise ConfigError([Problem(_where(origins, ("policy",), file), "policy", str(exc))]) from None
    return cfg


def environment() -> dict[str, str]:
    """The `AGENTGOV_*` variables of this process."""
    return {k: v for k, v in os.environ.items() if k.startswith("AGENTGOV_")}
