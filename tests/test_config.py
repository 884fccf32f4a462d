"""agentgov.yaml: every key validated on load, every mistake a clear error (and exit 1 from `serve`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from agentgov.engine.backends.envoy_result import OPA_ENVOY_DEFAULT_RULE
from agentgov.engine.config import (
    ConfigError,
    build_backend,
    build_governor,
    load_config,
)
from agentgov.engine.hooks.api_keys import digest, new_key
from tests.conftest import POLICIES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentgov.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("policy: {engine: rego}\nextra: 1\n", "unknown key(s) extra"),
    ("policy: {engnie: rego}\n", "policy.engnie"),
    ("server: {tls: {cert: x}}\n", "server.tls.cert"),
    ("server: {tls: [1]}\n", "`server.tls` must be a mapping"),
    ("policy: [1]\n", "`policy` must be a mapping"),
    ("- 1\n", "top level must be a mapping"),
    ("policy: {engine: rego\n", "agentgov.yaml:"),
    ("policy: {engine: wasm}\n", "policy.engine must be"),
    ("policy: {input_format: envoy}\n", "policy.input_format must be one of agentgov, opa-envoy"),
    ("server: {port: '9191'}\n", "server.port must be an integer"),
    ("server: {workers: true}\n", "server.workers must be an integer"),
    ("server: {allow_truncated_body: 1}\n", "server.allow_truncated_body must be true or false"),
    ("server: {drain_s: fast}\n", "server.drain_s must be a number"),
    ("server: {decision_service: 9191}\n", "server.decision_service must be a string"),
])
def test_load_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "absent.yaml")


def test_opa_envoy_format_changes_the_default_rule_only(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "policy: {input_format: opa-envoy}\n"))
    assert cfg.rule == OPA_ENVOY_DEFAULT_RULE
    cfg = load_config(write(tmp_path, "policy: {input_format: opa-envoy, rule: data.envoy.authz.result}\n"))
    assert cfg.rule == "data.envoy.authz.result"


@pytest.mark.parametrize(("text", "message"), [
    ("policy: {engine: cedar, input_format: opa-envoy, paths: [POL]}\n", "OPA-Envoy policies are Rego"),
    ("policy: {engine: opa}\n", "needs policy.opa_url"),
    ("policy: {engine: cedar, paths: [EMPTY]}\n", "no cedar policies"),
])
def test_backend_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    text = text.replace("POL", str(POLICIES)).replace("EMPTY", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=message):
        build_backend(load_config(write(tmp_path, text)))


@pytest.mark.parametrize(("identity", "message"), [
    ("{}", "every request would be anonymous"),
    ("{issuers: [{issuer: x}]}", "identity:"),
    ("{issuers: oops}", "non-empty list"),
    ("{api_keys: [{id: a, key: secret}]}", "never the key itself"),
])
def test_identity_errors(tmp_path: Path, identity: str, message: str) -> None:
    path = write(tmp_path, f"policy: {{paths: ['{POLICIES}']}}\nidentity: {identity}\n")
    with pytest.raises(ConfigError, match=message):
        build_governor(load_config(path))


def test_anonymous_only_when_asked_and_api_keys_alone_are_enough(tmp_path: Path) -> None:
    path = write(tmp_path, f"policy: {{paths: ['{POLICIES}']}}\nidentity: {{required: false}}\n")
    assert build_governor(load_config(path)).identity is None
    sha = digest(new_key())
    path = write(tmp_path, f"policy: {{paths: ['{POLICIES}']}}\nidentity: {{api_keys: [{{id: svc, sha256: {sha}}}]}}\n")
    assert build_governor(load_config(path)).identity is not None


def test_tls_files_are_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_bytes(b"CERT")
    cfg = load_config(write(tmp_path, "server: {tls: {cert_file: cert.pem, key_file: missing.pem}}\n"))
    assert cfg.read_tls("cert_file") == b"CERT"
    assert cfg.read_tls("client_ca_file") is None
    with pytest.raises(ConfigError, match=r"server.tls.key_file: missing.pem"):
        cfg.read_tls("key_file")


@pytest.mark.parametrize(("text", "message"), [
    ("policy: {engine: wasm}\n", "config error"),
    ("identity: {}\npolicy: {paths: [POL]}\n", "every request would be anonymous"),
    ("server: {decision_service: '127.0.0.1:1', tls: {ca_file: nope.pem}}\n", "server.tls.ca_file"),
    ("identity: {required: false}\npolicy: {paths: [POL]}\nserver: {tls: {cert_file: nope.pem}}\n", "cert_file"),
])
def test_serve_refuses_bad_config_with_exit_1(tmp_path: Path, run_cli: Callable[..., Result], text: str,
                                              message: str) -> None:
    path = write(tmp_path, text.replace("POL", str(POLICIES)))
    result = run_cli("serve", "--config", str(path), "--workers", "1")
    assert result.exit_code == 1
    assert message in result.output


def test_the_policy_folder_is_read_once_for_policies_and_tenant_caps(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With budgets on, the budget hook's per-tenant caps come from the data the policy set loaded:
    reading the folder a second time doubled the start-up cost of a large catalog."""
    import shutil

    from agentgov.engine.config import build as config_build
    from agentgov.engine.hooks.budget.hook import BudgetHook

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("tests", "examples"))
    (policies / "agentgov" / "budgets").mkdir()
    (policies / "agentgov" / "budgets" / "data.yaml").write_text("per-subject: {acme: {requests: 3}}\n")
    reads: list[object] = []
    real = config_build.discover

    def counted(roots: list[Path]) -> object:
        reads.append(roots)
        return real(roots)

    monkeypatch.setattr(config_build, "discover", counted)
    governor = build_governor(load_config(write(tmp_path, (
        f"policy: {{paths: [{policies}]}}\nidentity: {{required: false}}\n"
        "budgets: {store: sqlite, limits: [{name: per-subject, key: subject, window: 1h, requests: 50}]}\n"))))
    budget = next(slot.hook for slot in governor.hooks if isinstance(slot.hook, BudgetHook))
    assert budget.settings.tenant_caps == {"per-subject": {"acme": {"requests": 3}}}
    assert len(reads) == 1
