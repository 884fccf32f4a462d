"""One resolver for every command: file, then AGENTGOV_* variables, then flags, validated together
against the published schema, every problem at once with where it came from."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from jsonschema import Draft202012Validator

from agentgov.engine.bundles import settings as bundle_settings
from agentgov.engine.config import ConfigError, check, resolve, schema
from agentgov.engine.hooks.audit import hook as audit_hook
from agentgov.engine.hooks.audit import sinks as audit_sinks
from agentgov.engine.hooks.budget import limits as budget_limits
from agentgov.engine.hooks.pii import hook as pii_hook
from tests.conftest import POLICIES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentgov.yaml"
    path.write_text(text)
    return path


def test_the_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(schema())


def test_layers_win_in_order_file_environment_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 9000, workers: 2, http_port: 9100}\n")
    cfg = resolve(path, {"AGENTGOV_WORKERS": "3", "AGENTGOV_SERVER__HTTP_PORT": "9200"},
                  {"server.workers": ("--workers", 4), "server.port": ("--port", None)})
    assert (cfg.port, cfg.workers, cfg.http_port) == (9000, 4, 9200)
    assert cfg.source == str(path)


def test_every_problem_at_once_with_where_it_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: '9191'\n  colour: red\npolicy:\n  engine: wasm\n")
    with pytest.raises(ConfigError) as err:
        resolve(path, {"AGENTGOV_WORKERS": "0"}, {"server.log_level": ("--log-level", "loud")})
    lines = str(err.value).splitlines()
    assert lines == [  # in reading order: the file top to bottom, then the variables, then the flags
        f"{path}:2:3: server.port must be an integer, got '9191'",
        f"{path}:3:3: unknown key(s) server.colour",
        f"{path}:5:3: policy.engine must be one of rego, cedar, opa, got 'wasm'",
        "AGENTGOV_WORKERS: server.workers must be an integer from 1 to 64, got 0",
        "--log-level: server.log_level must be one of debug, info, warning, error, got 'loud'"]
    assert len(err.value.problems) == 5


def test_nested_problems_name_the_file_and_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "budgets:\n  limits:\n    - name: l\n      key: tenant\n      windw: 1h\n")
    with pytest.raises(ConfigError) as err:
        resolve(path)
    assert str(err.value) == f"{path}:5:7: budgets.limits[0]: unknown key(s) windw"


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 1\n  port: 2\n")
    with pytest.raises(ConfigError, match=r":3:3: server.port is set twice"):
        resolve(path)


def test_environment_values_are_yaml_scalars_and_lists_take_words(tmp_path: Path) -> None:
    cfg = resolve(None, {"AGENTGOV_SERVER__EXT_PROC": "true", "AGENTGOV_PII__TYPES": "EMAIL PHONE",
                         "AGENTGOV_SERVER__MCP_PATHS": "[/mcp, /tools]", "AGENTGOV_CONFIG": "ignored.yaml",
                         "AGENTGOV_UNRELATED": "x"})
    assert cfg.ext_proc is True
    assert cfg.pii["types"] == ["EMAIL", "PHONE"]
    assert cfg.mcp_paths == ("/mcp", "/tools")


def test_an_unknown_variable_key_is_named_by_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(None, {"AGENTGOV_SERVER__PROT": "1"})
    assert str(err.value) == "AGENTGOV_SERVER__PROT: unknown key(s) server.prot"


def test_paths_from_flags_are_relative_to_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, "policy: {bundle: {source: b.tar.gz, poll_min_s: 3}}\n")
    monkeypatch.chdir(tmp_path)
    cfg = resolve(path, {}, {"policy.paths": ("--policies", ["pol"])})
    assert cfg.paths == (str(tmp_path / "pol"),)
    assert cfg.bundle is None  # naming the paths replaces the configured bundle
    cfg = resolve(path, {}, {"policy.bundle.source": ("--bundle", "other.tar.gz")})
    assert cfg.bundle is not None
    assert cfg.bundle.source == str(tmp_path / "other.tar.gz")
    assert cfg.bundle.reload.poll_min_s == 3  # the section's other keys stay


def test_the_resolved_config_is_frozen(tmp_path: Path) -> None:
    cfg = resolve(write(tmp_path, "server: {port: 9000}\n"))
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]


def test_check_collects_instead_of_raising(tmp_path: Path) -> None:
    assert check(write(tmp_path, "server: {port: 1}\n")) == []
    problems = check(write(tmp_path, "server: {port: x, workers: y}\n"))
    assert [p.key for p in problems] == ["server.port", "server.workers"]


# --- the schema and the sections' own readers agree on the keys ------------------------------------

@pytest.mark.parametrize(("section", "reader_keys"), [
    (("pii",), pii_hook._KEYS),
    (("audit",), audit_hook._KEYS),
    (("audit", "sinks", "[]"), audit_sinks._KEYS),
    (("budgets",), budget_limits._TOP),
    (("budgets", "limits", "[]"), budget_limits._LIMIT_KEYS),
    (("budgets", "limits", "[]", "match"), budget_limits._MATCH),
    (("policy", "bundle", "{}"), bundle_settings._KEYS),
    (("policy", "bundle", "{}", "verification"), bundle_settings._VERIFICATION),
])
def test_the_schema_knows_exactly_the_keys_each_reader_knows(section: tuple[str, ...], reader_keys: set[str]) -> None:
    node: Any = schema()
    for part in section:
        if part == "[]":
            node = node["items"]
        elif part == "{}":
            node = next(branch for branch in node["oneOf"] if branch.get("type") == "object")
        else:
            node = node["properties"][part]
    assert set(node["properties"]) == set(reader_keys)


# --- through the CLI --------------------------------------------------------------------------------

def test_config_schema_prints_the_schema(run_cli: Callable[..., Result]) -> None:
    result = run_cli("config", "schema")
    assert result.exit_code == 0
    assert json.loads(result.output) == schema()


def test_config_check_lists_every_problem_and_exits_1(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    path = write(tmp_path, "server: {port: x}\npolicy: {engine: wasm}\n")
    result = run_cli("config", "check", str(path), "--no-env")
    assert result.exit_code == 1
    assert f"{path}:1:10: server.port must be an integer, got 'x'" in result.output
    assert "policy.engine must be one of rego, cedar, opa" in result.output
    doc = json.loads(run_cli("config", "check", str(path), "--no-env", "--format", "json").output)
    assert doc["ok"] is False
    assert [p["key"] for p in doc["problems"]] == ["server.port", "policy.engine"]


def test_config_check_also_builds_what_serve_builds(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    good = write(tmp_path, yaml.safe_dump({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False}}))
    result = run_cli("config", "check", str(good), "--no-env")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{good}: ok"
    anonymous = write(tmp_path, yaml.safe_dump({"policy": {"paths": [str(POLICIES)]}}))
    result = run_cli("config", "check", str(anonymous), "--no-env")
    assert result.exit_code == 1
    assert "every request would be anonymous" in result.output
    assert run_cli("config", "check", str(anonymous), "--no-env", "--no-load").exit_code == 0


def test_config_show_never_prints_a_credential(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    (tmp_path / "token").write_text("s3cret-bundle-token-value")
    path = write(tmp_path, yaml.safe_dump({"policy": {"bundle": {"source": "http://127.0.0.1:1/b.tar.gz",
                                                                  "token_file": "token"}}}))
    result = run_cli("config", "show", str(path))
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert json.loads(result.output)["bundle"]["source"] == "http://127.0.0.1:1/b.tar.gz"


def test_envoy_config_honours_the_same_variables_as_serve(tmp_path: Path, run_cli: Callable[..., Result],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTGOV_WORKERS", "3")
    monkeypatch.setenv("AGENTGOV_HTTP_PORT", "9400")
    result = run_cli("envoy-config")
    assert result.exit_code == 0, result.output
    bootstrap = yaml.safe_load(result.output)
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    ports = sorted(e["endpoint"]["address"]["socket_address"]["port_value"]
                   for c in clusters.values() if "agentgov" in c["name"]
                   for group in c["load_assignment"]["endpoints"] for e in group["lb_endpoints"])
    assert ports == [9400, 9401, 9402]
    monkeypatch.setenv("AGENTGOV_WORKERS", "many")
    result = run_cli("envoy-config")
    assert result.exit_code == 1
    assert "AGENTGOV_WORKERS: server.workers must be an integer" in result.output


def test_budget_show_without_any_configuration_says_so(tmp_path: Path, run_cli: Callable[..., Result],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("budget", "show")
    assert result.exit_code == 1
    assert "no configuration found" in result.output


def test_eval_and_test_read_the_policies_a_config_serves(tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    path = write(tmp_path, yaml.safe_dump({"policy": {"paths": [str(POLICIES)], "engine": "cedar"}}))
    (tmp_path / "input.json").write_text(json.dumps({
        "subject": {"id": "alice", "roles": ["analyst"], "tenant": "acme", "authenticated": True},
        "action": {"kind": "tool.call", "name": "crm.query"}, "resource": {"type": "tool", "id": "crm.query"}}))
    result = run_cli("eval", "--config", str(path), "-i", str(tmp_path / "input.json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["engine"] == "cedar"
    result = run_cli("eval", "--config", str(path), "--engine", "rego", "-i", str(tmp_path / "input.json"))
    assert json.loads(result.output)["engine"] == "rego"  # a flag wins over the file
    result = run_cli("test", "--config", str(path))
    assert result.exit_code == 0, result.output
    bad = write(tmp_path, "policy: {engine: wasm}\n")
    result = run_cli("test", "--config", str(bad))
    assert result.exit_code == 1
    assert "policy.engine must be one of" in result.output


def test_audit_and_shadow_commands_default_to_the_configured_folder(tmp_path: Path,
                                                                    run_cli: Callable[..., Result]) -> None:
    path = write(tmp_path, yaml.safe_dump({"audit": {"dir": "audit"}}))
    result = run_cli("audit", "verify", "--config", str(path))
    assert result.exit_code == 1
    assert "does not exist" in result.output
    (tmp_path / "audit").mkdir()
    assert run_cli("audit", "query", "--config", str(path)).exit_code == 0
    assert run_cli("shadow", "report", "--config", str(path)).exit_code == 0
    result = run_cli("audit", "export")
    assert result.exit_code == 1
    assert "--config FILE with an `audit.dir`" in result.output
    nothing = write(tmp_path, "server: {port: 1}\n")
    result = run_cli("audit", "query", "--config", str(nothing))
    assert result.exit_code == 1
    assert "no `audit.dir`" in result.output


def test_problems_found_when_building_still_name_their_place(tmp_path: Path) -> None:
    """What only a section's own reader can see (a PII type that does not exist, a time zone that
    does not) is reported at the key's line too, not as a bare message."""
    from agentgov.engine.config import build_governor

    path = write(tmp_path, yaml.safe_dump({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False},
                                           "pii": {"min_confidence": {"NOT_A_TYPE": 0.3}}}, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        build_governor(resolve(path))
    assert str(err.value).startswith(f"{path}:7:3: pii.min_confidence: unknown type(s) NOT_A_TYPE")
    path = write(tmp_path, yaml.safe_dump({"policy": {"paths": [str(POLICIES)]}, "identity": {"required": False},
                                           "budgets": {"time_zone": "Mars/Olympus"}}, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        build_governor(resolve(path))
    assert str(err.value).startswith(f"{path}:7:3: budgets.time_zone")


def test_the_package_names_stay_the_functions_after_any_import_order() -> None:
    """`agentgov.engine.config` loads its names lazily: no submodule may share a name with a function
    it exports, or importing that submodule first would replace the function with the module."""
    import importlib

    import agentgov.engine.config as package

    for module in ("build", "resolver", "settings"):
        importlib.import_module(f"agentgov.engine.config.{module}")
    for name in package.__all__:
        assert not isinstance(getattr(package, name), type(package)), name
